"""Background capture writer: bounded queue -> batches -> Arrow appends into DuckDB.

The proxy calls ``submit`` on its hot path; it never blocks and never raises. Everything that can
go wrong (queue full, writer thread dead, store unopenable, disk full) costs the capture, not the
request, and is counted in ``driftloop_capture_dropped_total{reason}``.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import time
from collections.abc import Callable

from monitor.capture import CapturedExchange, Redact, rows_to_arrow, to_row
from monitor.metrics import DropReason, SidecarMetrics
from monitor.store import Store

log = logging.getLogger(__name__)

_STOP = object()


class _FlushRequest:
    """Queued by ``flush``: the writer writes what it holds, then sets ``done``."""

    def __init__(self) -> None:
        self.done = threading.Event()


RESTART_BACKOFF_S = 1.0


def _no_redaction(text: str) -> str:
    return text


class CaptureWriter:
    """Owns the capture queue and the thread that drains it into ``store``.

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
        self._queue: queue.Queue[object] = queue.Queue(maxsize=queue_size)
        self._batch_size = batch_size
        self._flush_interval_s = flush_interval_s
        self._redact = redact
        self._clock = clock
        self._thread: threading.Thread | None = None
        self._closing = False
        self._last_restart = float("-inf")
        metrics.queue_depth.set_function(self._queue.qsize)
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
        """Queue an exchange for writing; drops (and counts) instead of blocking or raising."""
        if self.store is None:
            self._metrics.drop(DropReason.STORE_UNAVAILABLE)
            return
        if self._closing:
            self._metrics.drop(DropReason.SHUTDOWN)
            return
        if not self.healthy:
            self._restart_if_due()
        try:
            self._queue.put_nowait(exchange)
        except queue.Full:
            self._metrics.drop(DropReason.QUEUE_FULL)
            return
        self._metrics.captured.inc()

    def flush(self, timeout_s: float = 10.0) -> bool:
        """Block until everything submitted before this call is written; False on timeout."""
        if not self.healthy:
            return False
        request = _FlushRequest()
        try:
            self._queue.put(request, timeout=timeout_s)
        except queue.Full:
            return False
        return request.done.wait(timeout_s)

    def close(self, timeout_s: float = 10.0) -> None:
        """Flush what is queued and stop the thread; what cannot be written in time is counted."""
        self._closing = True
        if self._thread is not None and self._thread.is_alive():
            with contextlib.suppress(queue.Full):
                self._queue.put(_STOP, timeout=timeout_s)
            self._thread.join(timeout_s)
        leftover = self._discard_queue()
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
        pending: list[CapturedExchange] = []
        try:
            deadline = 0.0
            while True:
                if pending:
                    timeout = max(0.0, deadline - self._clock())
                else:
                    timeout = self._flush_interval_s
                try:
                    item = self._queue.get(timeout=timeout)
                except queue.Empty:
                    item = None
                marker = None if isinstance(item, CapturedExchange) else item
                if isinstance(item, CapturedExchange):
                    if not pending:
                        deadline = self._clock() + self._flush_interval_s
                    pending.append(item)
                    marker = self._drain_into(pending)
                due = len(pending) >= self._batch_size or self._clock() >= deadline
                if pending and (marker is not None or due):
                    batch, pending = pending, []
                    self._flush(batch)
                if isinstance(marker, _FlushRequest):
                    marker.done.set()
                elif marker is _STOP:
                    return
        finally:
            if pending:  # only reached when the thread is killed mid-batch
                self._metrics.drop(DropReason.WRITER_DEAD, len(pending))

    def _drain_into(self, pending: list[CapturedExchange]) -> object:
        """Take what is already queued, up to a batch; returns a stop/flush marker if one came."""
        while len(pending) < self._batch_size:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                return None
            if not isinstance(item, CapturedExchange):
                return item
            pending.append(item)
        return None

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

    def _discard_queue(self) -> int:
        count = 0
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                return count
            count += isinstance(item, CapturedExchange)
