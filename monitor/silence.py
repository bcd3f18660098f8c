"""A limit on upstream silence between body chunks that costs a float store per chunk.

``asyncio.timeout`` around every read would create and cancel a timer per SSE event, and streams
have hundreds; here one timer runs per idle period and each chunk only records the time. While
the proxy waits on its client (``send`` under back-pressure) the clock is paused: a slow client is
not a silent upstream.

>>> async def demo():
...     async with Silence(0.01) as silence:
...         await asyncio.sleep(0.05)
>>> asyncio.run(demo())
Traceback (most recent call last):
TimeoutError
"""

from __future__ import annotations

import asyncio
from types import TracebackType


class Silence:
    """Raises ``TimeoutError`` out of its block after ``idle_s`` without ``heard()``."""

    def __init__(self, idle_s: float) -> None:
        self.idle_s = idle_s
        self._timeout = asyncio.timeout(None)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._handle: asyncio.TimerHandle | None = None
        self._last = 0.0
        self._paused = False

    async def __aenter__(self) -> Silence:
        await self._timeout.__aenter__()
        self._loop = asyncio.get_running_loop()
        self._last = self._loop.time()
        self._handle = self._loop.call_at(self._last + self.idle_s, self._check)
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._handle is not None:
            self._handle.cancel()
        await self._timeout.__aexit__(kind, exc, tb)  # raises TimeoutError when it fired

    def heard(self) -> None:
        """The upstream sent something: the silence starts again from now."""
        if self._loop is not None:
            self._last = self._loop.time()

    def pause(self) -> None:
        """The proxy waits on its client, not on the upstream, until ``heard()``."""
        self._paused = True

    def resume(self) -> None:
        self._paused = False
        self.heard()

    def _check(self) -> None:
        if self._loop is None:
            return
        now = self._loop.time()
        due = self._last + self.idle_s
        if self._paused:
            due = now + self.idle_s
        if now < due:
            self._handle = self._loop.call_at(due, self._check)
        else:
            self._timeout.reschedule(now)  # cancels the block; asyncio turns it into TimeoutError
