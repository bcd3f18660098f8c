"""Limits on what a client may make the sidecar hold: connections, header bytes and time, bodies.

uvicorn with httptools enforces none of these by itself: it arms its keep-alive timer only after a
first response, so a connection that never sends a byte stays open for good, and it buffers
headers of any size. The header-side limits therefore live in a subclass of uvicorn's httptools
protocol (``guarded_protocol``); the body-side ones in ``read_body``, which the proxy calls.
Every refusal is counted in ``driftloop_proxy_rejected_total{reason}``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from monitor.metrics import RejectReason
from monitor.responses import raw_error

Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
OnReject = Callable[[RejectReason], None]

_HEADERS_END = b"\r\n\r\n"


@dataclass(frozen=True, slots=True)
class ClientLimits:
    """What one client connection may cost; the defaults are those of ``SidecarConfig``."""

    max_body_bytes: int = 16 * 1024 * 1024
    max_header_bytes: int = 32 * 1024
    header_timeout_s: float = 10.0
    body_timeout_s: float = 60.0
    keep_alive_timeout_s: float = 5.0
    max_connections: int = 1024


class BodyRejectedError(Exception):
    """The client's body broke a limit; the proxy answers ``status`` and counts ``reason``."""

    def __init__(self, status: int, reason: RejectReason, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason


async def read_body(
    receive: Receive, headers: list[tuple[bytes, bytes]], limits: ClientLimits
) -> bytes | None:
    """The whole request body, or None when the client left; raises ``BodyRejectedError``."""
    most = limits.max_body_bytes
    declared = _content_length(headers)
    if declared is not None and declared > most:
        raise _too_large(declared, most)
    parts: list[bytes] = []
    size = 0
    try:
        async with asyncio.timeout(limits.body_timeout_s):
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    return None
                chunk = message.get("body", b"")
                size += len(chunk)
                if size > most:
                    raise _too_large(size, most)
                parts.append(chunk)
                if not message.get("more_body", False):
                    return b"".join(parts)
    except TimeoutError:
        raise BodyRejectedError(
            408,
            RejectReason.BODY_TIMEOUT,
            f"driftloop: the request body did not arrive within sidecar.body_timeout_s "
            f"({limits.body_timeout_s:g} s; {size} bytes came)",
        ) from None


def _too_large(size: int, most: int) -> BodyRejectedError:
    return BodyRejectedError(
        413,
        RejectReason.BODY_TOO_LARGE,
        f"driftloop: the request body ({size} bytes or more) is larger than "
        f"sidecar.max_request_body_bytes ({most})",
    )


def _content_length(headers: list[tuple[bytes, bytes]]) -> int | None:
    for name, value in headers:
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None  # httptools refuses a malformed length before the app runs
    return None


def guarded_protocol(limits: ClientLimits, on_reject: OnReject) -> type[HttpToolsProtocol]:
    """uvicorn's httptools protocol with a connection cap and header size and time limits."""

    class GuardedHttpToolsProtocol(_Guarded):
        pass

    GuardedHttpToolsProtocol.limits = limits
    GuardedHttpToolsProtocol.on_reject = staticmethod(on_reject)
    return GuardedHttpToolsProtocol


class _Guarded(HttpToolsProtocol):
    limits: ClientLimits
    on_reject: OnReject

    _timer: asyncio.TimerHandle | None = None
    _awaiting_headers = True
    _header_bytes = 0
    _tail = b""
    _refused = False

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        # `connections` already holds this one, hence ">".
        if len(self.connections) > self.limits.max_connections:
            self._refuse(
                RejectReason.CONNECTION_LIMIT,
                raw_error(
                    503,
                    "Service Unavailable",
                    f"driftloop: more than sidecar.max_client_connections "
                    f"({self.limits.max_connections}) connections are open",
                    "too_many_connections",
                ),
            )
            return
        self._arm(self.limits.header_timeout_s, self._header_timeout)

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return
        if self._awaiting_headers and self._count_header_bytes(data):
            return
        super().data_received(data)

    def _count_header_bytes(self, data: bytes) -> bool:
        """Add the header part of ``data``; True when the request was refused for its size."""
        if self._timer is None:  # the first bytes of a next request on a kept-alive connection
            self._arm(self.limits.header_timeout_s, self._header_timeout)
        window = self._tail + data
        end = window.find(_HEADERS_END)
        if end < 0:
            self._header_bytes += len(data)
            self._tail = window[-(len(_HEADERS_END) - 1) :]
        else:
            self._header_bytes += max(0, end + len(_HEADERS_END) - len(self._tail))
        if self._header_bytes <= self.limits.max_header_bytes:
            return False
        self._refuse(
            RejectReason.HEADER_TOO_LARGE,
            raw_error(
                431,
                "Request Header Fields Too Large",
                f"driftloop: the request line and headers are larger than "
                f"sidecar.max_header_bytes ({self.limits.max_header_bytes})",
                "headers_too_large",
            ),
        )
        return True

    def on_headers_complete(self) -> None:
        self._awaiting_headers = False
        # The body has its own limit from here (read_body); an early answer (413) leaves uvicorn
        # discarding the rest of the body, which may not take longer either.
        self._arm(self.limits.body_timeout_s, self._body_timeout)
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._disarm()
        self._awaiting_headers = True
        self._header_bytes = 0
        self._tail = b""

    def _header_timeout(self) -> None:
        self._timer = None
        if self._header_bytes == 0:
            # Nothing sent at all: an idle connection, closed without an answer (like keep-alive).
            self._refuse(RejectReason.IDLE_TIMEOUT, b"")
            return
        self._refuse(
            RejectReason.HEADER_TIMEOUT,
            raw_error(
                408,
                "Request Timeout",
                f"driftloop: the request headers did not arrive within "
                f"sidecar.header_timeout_s ({self.limits.header_timeout_s:g} s)",
                "header_timeout",
            ),
        )

    def _body_timeout(self) -> None:
        self._timer = None
        # While the app reads, read_body answers 408 itself; this only ends a discarded body.
        if self.cycle is not None and self.cycle.response_complete:
            self.transport.close()

    def _refuse(self, reason: RejectReason, response: bytes) -> None:
        self._refused = True
        self._disarm()
        self.on_reject(reason)
        if not self.transport.is_closing():
            if response:
                self.transport.write(response)
            self.transport.close()

    def _arm(self, delay_s: float, callback: Callable[[], None]) -> None:
        self._disarm()
        self._timer = self.loop.call_later(delay_s, callback)

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
