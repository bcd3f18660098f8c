"""Background capture writer: bounded queue -> batches -> Arrow appends into DuckDB.

The proxy calls ``submit`` on its hot path; it never blocks and never raises. Everything that can
go wrong (queue full, writer thread dead, store unopenable, disk full) costs the capture, not the
request, and is counted in ``driftloop_capture_dropped_total{reason}``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable

from monitor.capture import CapturedExchange, Redact, rows_to_arrow, to_row
from monitor.metrics import DropReason, SidecarMetrics
from monitor.store import Store

log = logging.getLogger(__name__)

RESTART_BACKOFF_S = 1.0


def _no_redaction(text: str) -> str:
    return text


class CaptureWriter:
    """Owns the capture buffer and the thread that drains it into ``store``.

    The buffer is a deque the hot path appends to without locks or thread wake-ups; the writer
    wakes once per ``batch_size`` rows or ``flush_interval_s``, whichever comes first. (A
    ``queue.Queue`` wakes the writer on every put, and those GIL hand-offs cost the proxy
    more than the capture itself.)

    >>> from prometheus_client import CollectorRegistry
    >>> writer = CaptureWriter(Store.open(":memory:"), SidecarMetrics(CollectorRegistry()))
    >>> writer.start(); writer.close()
    """

    def __init__(
        self,
        store: Store | None,
        metrics: SidecarMetrics,
        *,
        queue_size: int = 10_000,
        batch_size: int = 512,
        flush_interval_s: float = 1.0,
        redact: Redact = _no_redaction,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store = store
        self._metrics = metrics
        self._pending: deque[CapturedExchange] = deque()
        self._queue_size = queue_size
        self._wake = threading.Event()
        self._flush_waiters: deque[threading.Event] = deque()
        self._batch_size = batch_size
        self._flush_interval_s = flush_interval_s
        self._redact = redact
        self._clock = clock
        self._thread: threading.Thread | None = None
        self._closing = False
        self._last_restart = float("-inf")
        metrics.queue_depth.set_function(lambda: len(self._pending))
        metrics.writer_up.set_function(lambda: 1.0 if self.healthy else 0.0)

    @property
    def healthy(self) -> bool:
        return self.store is not None and self._thread is not None and self._thread.is_alive()

    def start(self) -> None:
        """Start the writer thread (a daemon: a hard kill loses at most the unflushed rows)."""
        self._thread = threading.Thread(
            target=self._run, name="driftloop-capture-writer", daemon=True
        )
        self._thread.start()

    def submit(self, exchange: CapturedExchange) -> None:
        """Buffer an exchange for writing; drops (and counts) instead of blocking or raising."""
        if self.store is None:
            self._metrics.drop(DropReason.STORE_UNAVAILABLE)
            return
        if self._closing:
            self._metrics.drop(DropReason.SHUTDOWN)
            return
        if not self.healthy:
            self._restart_if_due()
        if len(self._pending) >= self._queue_size:
            self._metrics.drop(DropReason.QUEUE_FULL)
            return
        self._pending.append(exchange)  # deque.append is atomic under the GIL
        self._metrics.captured.inc()
        if len(self._pending) >= self._batch_size:
            self._wake.set()

    def flush(self, timeout_s: float = 10.0) -> bool:
        """Block until everything submitted before this call is written; False on timeout."""
        if not self.healthy:
            return False
        done = threading.Event()
        self._flush_waiters.append(done)
        self._wake.set()
        return done.wait(timeout_s)

    def close(self, timeout_s: float = 10.0) -> None:
        """Write what is buffered and stop the thread; what cannot be written is counted."""
        self._closing = True
        if self._thread is not None and self._thread.is_alive():
            self._wake.set()
            self._thread.join(timeout_s)
        leftover = len(self._pending)
        self._pending.clear()
        if leftover:
            self._metrics.drop(DropReason.SHUTDOWN, leftover)

    def _restart_if_due(self) -> None:
        # A dead writer is restarted, but not more than once per backoff period, so that a
        # writer that dies at once on every start cannot spin.
        now = self._clock()
        if now - self._last_restart < RESTART_BACKOFF_S:
            return
        self._last_restart = now
        log.error("capture writer thread is dead; restarting it")
        self._metrics.writer_restarts.inc()
        self.start()

    def _run(self) -> None:
        batch: list[CapturedExchange] = []
        try:
            while True:
                self._wake.wait(self._flush_interval_s)
                self._wake.clear()
                stopping = self._closing
                waiters = [self._flush_waiters.popleft() for _ in range(len(self._flush_waiters))]
                while self._pending:
                    take = min(len(self._pending), self._batch_size)
                    batch = [self._pending.popleft() for _ in range(take)]
                    self._flush(batch)
                    batch = []
                for waiter in waiters:
                    waiter.set()
                if stopping:
                    return
        finally:
            if batch:  # only reached when the thread is killed mid-batch
                self._metrics.drop(DropReason.WRITER_DEAD, len(batch))

    def _flush(self, batch: list[CapturedExchange]) -> None:
        store = self.store
        if store is None:
            self._metrics.drop(DropReason.STORE_UNAVAILABLE, len(batch))
            return
        started = time.perf_counter()
        try:
            table = rows_to_arrow([to_row(exchange, self._redact) for exchange in batch])
            written = store.append("requests", table)
        except Exception:
            log.exception("capture flush of %d rows failed", len(batch))
            self._metrics.drop(DropReason.WRITE_ERROR, len(batch))
            return
        self._metrics.rows_written.inc(written)
        self._metrics.flush_duration.observe(time.perf_counter() - started)
