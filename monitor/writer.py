"""Background capture writer: a byte-bounded buffer -> batches -> Arrow appends into DuckDB.

The proxy calls ``submit`` on its hot path; it never blocks and never raises. A batch that fails to
write stays in the buffer and is retried with backoff (the store is reopened when its file was
deleted or replaced, or opened late when it failed at start), so a store fault costs captures only
once the byte budget is spent. Every loss is counted in ``driftloop_capture_dropped_total{reason}``
and the writer's ``problem`` says what is wrong while it lasts.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import pyarrow as pa

from monitor.capture import CapturedExchange, Redact
from monitor.capture_table import CaptureSink, append_requests
from monitor.faults import Faults
from monitor.memory import release_free_memory
from monitor.metrics import DropReason, SidecarMetrics
from monitor.row_builder import Failure, RowBuilder, RowBuilderError, convert
from monitor.store import StoreCorruptError, StoreError, StoreReopenedError

log = logging.getLogger(__name__)

RESTART_BACKOFF_S = 1.0
# Bytes an exchange costs beyond its bodies (the object, ids, route): keeps tiny ones honest.
EXCHANGE_OVERHEAD_BYTES = 512


def _no_redaction(text: str) -> str:
    return text


def exchange_bytes(exchange: CapturedExchange) -> int:
    """What one buffered exchange holds in memory, as the byte budget counts it."""
    return len(exchange.request_body) + len(exchange.response_body) + EXCHANGE_OVERHEAD_BYTES


@dataclass
class _FlushWaiter:
    done: threading.Event = field(default_factory=threading.Event)
    ok: bool = False


class CaptureWriter:
    """Owns the capture buffer and the thread that drains it into ``store``.

    The buffer is a deque the hot path appends to under a short uncontended lock, without thread
    wake-ups; the writer wakes once per ``batch_size`` rows (or ``max_batch_bytes``) or
    ``flush_interval_s``, whichever comes first. (A ``queue.Queue`` wakes the writer on every
    put, and those GIL hand-offs cost the proxy more than the capture itself.)

    >>> from prometheus_client import CollectorRegistry
    >>> from monitor.store import Store
    >>> writer = CaptureWriter(Store.open(":memory:"), SidecarMetrics(CollectorRegistry()))
    >>> writer.start(); writer.close()
    """

    def __init__(
        self,
        store: CaptureSink | None,
        metrics: SidecarMetrics,
        *,
        opener: Callable[[], CaptureSink] | None = None,
        problem: str | None = None,
        queue_size: int = 10_000,
        max_buffer_bytes: int = 256 * 2**20,
        batch_size: int = 512,
        max_batch_bytes: int = 16 * 2**20,
        flush_interval_s: float = 1.0,
        retry_max_s: float = 5.0,
        redact: Redact = _no_redaction,
        rows_in_child: bool = False,
        clock: Callable[[], float] = time.monotonic,
        faults: Faults | None = None,
    ) -> None:
        """``opener`` (re)opens the store when ``store`` is None: it is retried with backoff.

        ``rows_in_child`` turns batches into rows in a child process (``monitor.row_builder``),
        off this process's GIL; otherwise this thread does it.
        """
        self.store = store
        self.faults = faults or (store.faults if store is not None else Faults())
        self._opener = opener
        self._owns_store = False
        self._metrics = metrics
        self._pending: deque[CapturedExchange] = deque()
        self._buffered_bytes = 0
        self._lock = threading.Lock()
        self._queue_size = queue_size
        self._max_buffer_bytes = max_buffer_bytes
        self._wake = threading.Event()
        self._flush_waiters: deque[_FlushWaiter] = deque()
        self._batch_size = batch_size
        self._max_batch_bytes = max_batch_bytes
        self._flush_interval_s = flush_interval_s
        self._retry_max_s = retry_max_s
        self._redact = redact
        self.row_builder = RowBuilder(redact) if rows_in_child else None
        self._clock = clock
        self._thread: threading.Thread | None = None
        self._closing = False
        self._last_restart = float("-inf")
        self.problem: str | None = None if store is not None else problem or "no store is open"
        self._failure: DropReason | None = DropReason.STORE_UNAVAILABLE if store is None else None
        self._backoff_s = 0.0
        self._retry_at = float("-inf")
        metrics.queue_depth.set_function(lambda: len(self._pending))
        metrics.buffer_bytes.set_function(lambda: self._buffered_bytes)
        metrics.writer_up.set_function(lambda: 1.0 if self.healthy else 0.0)

    @property
    def healthy(self) -> bool:
        """The thread runs, the store is open and the last write (if any) succeeded."""
        return self.store is not None and self.problem is None and self._alive()

    def status(self) -> tuple[str, str | None]:
        """``("ok", None)``, or ``("degraded", what is wrong)`` for /healthz."""
        if self.healthy:
            return "ok", None
        if self.problem is not None:
            return "degraded", self.problem
        return "degraded", "the capture writer thread is not running"

    def start(self) -> None:
        """Start the writer thread (a daemon: a hard kill loses at most the unflushed rows).

        One thread at a time: a start while it runs does nothing.
        """
        if self._alive():
            return
        if self.row_builder is not None and self._thread is None:
            self.row_builder.start()
        self._thread = threading.Thread(
            target=self._run, name="driftloop-capture-writer", daemon=True
        )
        self._thread.start()

    def submit(self, exchange: CapturedExchange) -> None:
        """Buffer an exchange for writing; drops (and counts) instead of blocking or raising."""
        if self._closing:
            self._metrics.drop(DropReason.SHUTDOWN)
            return
        if self.store is None and self._opener is None:  # it will never open: do not buffer
            self._metrics.drop(DropReason.STORE_UNAVAILABLE)
            return
        if self._thread is not None and not self._thread.is_alive():
            self._restart_if_due()
        size = exchange_bytes(exchange)
        with self._lock:
            if len(self._pending) >= self._queue_size:
                full: DropReason | None = DropReason.QUEUE_FULL
            elif self._buffered_bytes + size > self._max_buffer_bytes:
                full = DropReason.BUFFER_FULL
            else:
                full = None
                self._pending.append(exchange)
                self._buffered_bytes += size
                depth, buffered = len(self._pending), self._buffered_bytes
        if full is not None:
            # A buffer full because the store fails is lost to the store fault: say so.
            self._metrics.drop(self._failure or full)
            return
        self._metrics.captured.inc()
        if depth >= self._batch_size or buffered >= self._max_batch_bytes:
            self._wake.set()

    def flush(self, timeout_s: float = 10.0) -> bool:
        """Block until everything submitted before this call is written; False if it was not."""
        if not self._alive():
            return False
        waiter = _FlushWaiter()
        self._flush_waiters.append(waiter)
        self._wake.set()
        return waiter.done.wait(timeout_s) and waiter.ok

    def close(self, timeout_s: float = 10.0) -> None:
        """Write what is buffered and stop the thread; what cannot be written is counted."""
        self._closing = True
        alive = self._alive()
        if alive and self._thread is not None:
            self._wake.set()
            self._thread.join(timeout_s)
        with self._lock:
            leftover = len(self._pending)
            self._pending.clear()
            self._buffered_bytes = 0
        if leftover:
            reason = self._failure or (DropReason.SHUTDOWN if alive else DropReason.WRITER_DEAD)
            self._metrics.drop(reason, leftover)
        if self._owns_store and self.store is not None:
            self.store.close()
        if self.row_builder is not None:
            self.row_builder.close()

    def _alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

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
        try:
            self._loop()
        except BaseException:  # the thread dies; the next submit restarts it, rows are kept
            log.critical("capture writer thread died", exc_info=True)

    def _loop(self) -> None:
        while True:
            self.faults.check("writer.loop")
            wait_s = self._flush_interval_s
            if self.problem is not None:
                wait_s = min(wait_s, max(self._retry_at - self._clock(), 0.01))
            self._wake.wait(wait_s)
            self._wake.clear()
            stopping = self._closing
            waiters = [self._flush_waiters.popleft() for _ in range(len(self._flush_waiters))]
            # A flush or a shutdown tries at once; otherwise a failing store waits its backoff.
            ok = self._drain(force=stopping or bool(waiters))
            for waiter in waiters:
                waiter.ok = ok
                waiter.done.set()
            if stopping:
                return

    def _drain(self, force: bool) -> bool:
        """Write everything buffered; False (rows kept for a retry) when the store fails."""
        if self.problem is not None and not force and self._clock() < self._retry_at:
            return False
        store = self._ready_store()
        if store is None:
            return False
        written_bytes = 0
        while self._pending:
            batch = self._take_batch()
            try:
                kept = self._write(store, batch)
            except BaseException:
                self._put_back(batch)  # the thread dies (a bug, an injected exit): keep the rows
                raise
            if kept:
                self._put_back(kept)
                retried = {id(exchange) for exchange in kept}
                self._release([e for e in batch if id(e) not in retried])  # dropped as bad rows
                return False
            written_bytes += self._release(batch)
        self._recovered()
        if written_bytes >= self._max_batch_bytes:
            release_free_memory()  # large bodies leave freed heap the allocator keeps otherwise
        return True

    def _ready_store(self) -> CaptureSink | None:
        """The open store: opened late, or reopened when its file was deleted or replaced."""
        store = self.store
        if store is None:
            if self._opener is None:
                return None
            try:
                store = self._opener()
            except StoreCorruptError as exc:
                self._opener = None  # an operator must act: stop retrying, stop buffering
                self._fail(DropReason.STORE_UNAVAILABLE, str(exc))
                self._drop_buffered(DropReason.STORE_UNAVAILABLE)
                return None
            except StoreError as exc:
                self._fail(DropReason.STORE_UNAVAILABLE, str(exc))
                return None
            log.warning("capture store %s opened", store.path)
            self.store, self._owns_store = store, True
            self._metrics.store_reopens.inc()
        if store.replaced():
            log.error("capture store %s was deleted or replaced while open; reopening", store.path)
            try:
                store.reopen()
            except StoreError as exc:
                message = f"{store.path} was deleted or replaced and cannot be reopened: {exc}"
                self._fail(DropReason.STORE_UNAVAILABLE, message)
                return None
            self._metrics.store_reopens.inc()
        return store

    def _write(self, store: CaptureSink, batch: list[CapturedExchange]) -> list[CapturedExchange]:
        """Append ``batch``; returns the exchanges to retry (none when it was written)."""
        started = time.perf_counter()
        table, kept = self._convert(batch)
        if table is None:
            return []
        try:
            written = append_requests(store, table)
        except StoreReopenedError as exc:
            self._metrics.store_reopens.inc()
            if not exc.committed:
                self._metrics.write_failures.inc()
                self._fail(DropReason.WRITE_ERROR, str(exc))
                return kept
            written = table.num_rows  # DuckDB said the commit is durable: a retry would duplicate
        except Exception as exc:
            self._metrics.write_failures.inc()
            self._fail(DropReason.WRITE_ERROR, f"writes to {store.path} fail: {exc}")
            return kept
        if store.replaced():  # the rows went to a file no longer at the path: write them again
            return kept
        self._metrics.rows_written.inc(written)
        self._metrics.flush_duration.observe(time.perf_counter() - started)
        return []

    def _convert(
        self, batch: list[CapturedExchange]
    ) -> tuple[pa.Table | None, list[CapturedExchange]]:
        """Rows as Arrow; an exchange that cannot become a row is dropped, not retried forever."""
        try:
            table, failed = self._build(batch)
        except Exception:
            log.exception("a capture batch of %d exchanges cannot become Arrow", len(batch))
            self._metrics.drop(DropReason.CAPTURE_ERROR, len(batch))
            return None, []
        for index, reason in failed:
            log.error(
                "capture of request %s cannot become a row: %s", batch[index].request_id, reason
            )
            self._metrics.drop(DropReason.CAPTURE_ERROR)
        bad = {index for index, _ in failed}
        return table, [e for i, e in enumerate(batch) if i not in bad]

    def _build(self, batch: list[CapturedExchange]) -> tuple[pa.Table | None, list[Failure]]:
        if self.row_builder is not None:
            try:
                return self.row_builder.build(batch)
            except RowBuilderError as exc:
                log.error("%s; this batch is converted in the writer thread", exc)
                self._metrics.row_builder_failures.inc()
        return convert(batch, self._redact)

    def _take_batch(self) -> list[CapturedExchange]:
        # The byte cap bounds the copies a batch makes while it becomes rows, Arrow and DuckDB.
        batch: list[CapturedExchange] = []
        size = 0
        with self._lock:
            while self._pending and len(batch) < self._batch_size:
                if batch and size + exchange_bytes(self._pending[0]) > self._max_batch_bytes:
                    break
                exchange = self._pending.popleft()
                size += exchange_bytes(exchange)
                batch.append(exchange)
        return batch

    def _put_back(self, batch: list[CapturedExchange]) -> None:
        with self._lock:
            self._pending.extendleft(reversed(batch))

    def _release(self, batch: list[CapturedExchange]) -> int:
        size = sum(exchange_bytes(exchange) for exchange in batch)
        with self._lock:
            self._buffered_bytes -= size
        return size

    def _drop_buffered(self, reason: DropReason) -> None:
        with self._lock:
            count = len(self._pending)
            self._pending.clear()
            self._buffered_bytes = 0
        if count:
            self._metrics.drop(reason, count)

    def _fail(self, reason: DropReason, message: str) -> None:
        if self.problem != message:
            log.error("capture degraded: %s", message)
        self.problem, self._failure = message, reason
        self._backoff_s = min(max(self._backoff_s * 2, 0.1), self._retry_max_s)
        self._retry_at = self._clock() + self._backoff_s

    def _recovered(self) -> None:
        if self.problem is not None:
            log.warning("capture recovered from: %s", self.problem)
        self.problem, self._failure = None, None
        self._backoff_s, self._retry_at = 0.0, float("-inf")
