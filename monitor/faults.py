"""Named fault points of the capture path, armed by tests: the next append raises, or stalls.

Fault tests need to make one exact step fail (an append, the writer's loop) without reaching into
private state. A component checks its named points with ``faults.check(name)``; tests arm them
through a ``Faults`` passed to the constructor, or a service is started with
``DRIFTLOOP_FAULTS="store.append=raise"`` (comma-separated ``point=action[:count]``). Unarmed, a
check is one dict lookup.

Points: ``store.append`` (before the insert), ``store.open`` (before connecting),
``writer.loop`` (each pass of the writer thread). Actions: ``raise`` (an ``InjectedFault``),
``stall`` (block until ``release``), ``exit`` (``SystemExit`` in that thread: it dies).

>>> faults = Faults()
>>> faults.arm("store.append", "raise", count=1)
>>> faults.check("store.append")
Traceback (most recent call last):
...
monitor.faults.InjectedFault: injected fault at store.append
>>> faults.check("store.append")  # the count is used up
"""

from __future__ import annotations

import os
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field

ENV = "DRIFTLOOP_FAULTS"
POINTS = ("store.append", "store.open", "writer.loop")
ACTIONS = ("raise", "stall", "exit")


class InjectedFault(RuntimeError):
    """Raised by an armed ``raise`` point; stands in for a real I/O failure."""


@dataclass
class _Armed:
    action: str
    count: int | None  # None: every time until disarmed
    released: threading.Event = field(default_factory=threading.Event)


class Faults:
    """The armed fault points of one component tree (a service shares one instance)."""

    def __init__(self, spec: str = "") -> None:
        self._armed: dict[str, _Armed] = {}
        self._stalls: dict[str, _Armed] = {}  # kept after the count runs out, for ``release``
        self._lock = threading.Lock()
        self.stalled = threading.Event()  # set while some thread waits at a ``stall`` point
        for item in filter(None, (part.strip() for part in spec.split(","))):
            point, _, rest = item.partition("=")
            action, _, count = rest.partition(":")
            if not count.isdigit() and count:
                raise ValueError(f"{ENV}: count {count!r} in {item!r} is not a number")
            self.arm(point.strip(), action.strip(), count=int(count) if count else None)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> Faults:
        return cls(environ.get(ENV, ""))

    def arm(self, point: str, action: str, *, count: int | None = None) -> None:
        """Make the next ``count`` checks of ``point`` (all, if None) perform ``action``."""
        if point not in POINTS:
            raise ValueError(f"unknown fault point {point!r}; known: {', '.join(POINTS)}")
        if action not in ACTIONS:
            raise ValueError(f"unknown fault action {action!r}; known: {', '.join(ACTIONS)}")
        armed = _Armed(action, count)
        with self._lock:
            self._armed[point] = armed
            if action == "stall":
                self._stalls[point] = armed

    def release(self, point: str) -> None:
        """Disarm ``point`` and let any thread stalled there go on."""
        with self._lock:
            self._armed.pop(point, None)
            stall = self._stalls.pop(point, None)
        if stall is not None:
            stall.released.set()

    def check(self, point: str) -> None:
        """Perform the armed action of ``point``, if any."""
        armed = self._armed.get(point)
        if armed is None:
            return
        with self._lock:
            if armed.count is not None:
                armed.count -= 1
                if armed.count <= 0:
                    self._armed.pop(point, None)
        if armed.action == "raise":
            raise InjectedFault(f"injected fault at {point}")
        if armed.action == "exit":
            raise SystemExit(f"injected exit at {point}")
        self.stalled.set()
        try:
            armed.released.wait()
        finally:
            self.stalled.clear()
