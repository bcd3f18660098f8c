"""The capture writer's sink in a fleet sidecar: Arrow batches -> Parquet shards -> the spool.

``CaptureWriter`` appends batches here instead of into DuckDB. Batches accumulate in memory and
are sealed into one Parquet shard (zstd) when they reach ``max_bytes`` or ``max_age_s``; the
shard goes to the spool (durable on disk) and the uploader sends it on. So a ``kill -9`` loses
at most what was in memory: the writer's buffer (``capture.flush_interval_s``) plus the open
shard (``fleet.shard_max_age_s``). A spool that is full refuses the append, and the writer keeps
the rows and retries, as it does for a DuckDB that fails.
"""

from __future__ import annotations

import contextlib
import io
import logging
import threading
import time
from collections.abc import Callable

import pyarrow as pa
import pyarrow.parquet as pq

from monitor.capture_table import SHARD_SCHEMA, SIDECAR_COLUMN
from monitor.faults import Faults
from monitor.fleet_metrics import ShardMetrics
from monitor.shard_spool import ShardSpool, SpoolFullError, shard_key

log = logging.getLogger(__name__)


class ShardSink:
    """Seals appended rows into shards named by sidecar id and a rising sequence number."""

    def __init__(
        self,
        spool: ShardSpool,
        sidecar_id: str,
        metrics: ShardMetrics,
        *,
        max_bytes: int = 8 * 2**20,
        max_age_s: float = 5.0,
        clock: Callable[[], float] = time.time,
        on_sealed: Callable[[], None] = lambda: None,
    ) -> None:
        self.spool, self.sidecar_id, self._metrics = spool, sidecar_id, metrics
        self.path = str(spool.folder)
        self.faults = Faults()
        self._max_bytes, self._max_age_s = max_bytes, max_age_s
        self._clock = clock
        self.on_sealed = on_sealed  # the uploader's wake-up, set once both exist
        self._lock = threading.Lock()
        self._open: list[pa.Table] = []
        self._open_bytes = 0
        self._opened_at = 0.0
        # Milliseconds since the epoch: a restarted sidecar never reuses a name its predecessor
        # uploaded, even when its spool is gone (a collision is still caught by the upload).
        self._next = max(int(clock() * 1000), spool.highest_sequence() + 1)

    def append(self, table: str, batch: pa.Table) -> int:
        """Take rows for the next shard; raises ``SpoolFullError`` when nothing more fits."""
        if table != "requests":
            raise ValueError(f"a shard sink holds captured requests only, not {table!r}")
        with self._lock:
            if self._open_bytes >= self._max_bytes:
                self._seal()  # raises SpoolFullError while the spool is full: the writer retries
            rows = batch.append_column(
                SIDECAR_COLUMN, pa.array([self.sidecar_id] * batch.num_rows, pa.string())
            )
            if not self._open:
                self._opened_at = self._clock()
            self._open.append(rows.select(SHARD_SCHEMA.names).cast(SHARD_SCHEMA))
            self._open_bytes += rows.nbytes
            if self._open_bytes >= self._max_bytes:
                # A full spool: the rows are held, and the next append or tick retries the seal.
                with contextlib.suppress(SpoolFullError):
                    self._seal()
        return batch.num_rows

    def seal_if_due(self) -> None:
        """Seal the open shard once it is ``max_age_s`` old (the uploader calls this).

        A full spool keeps the rows open: the uploader goes on to upload (which frees the spool)
        and the next tick seals them.
        """
        with self._lock:
            if self._open and self._clock() - self._opened_at >= self._max_age_s:
                with contextlib.suppress(SpoolFullError):
                    self._seal()

    def close(self) -> None:
        """Seal what is open; rows that cannot be (the spool is full) are lost, and logged."""
        with self._lock:
            if not self._open:
                return
            try:
                self._seal()
            except SpoolFullError as exc:
                lost = sum(t.num_rows for t in self._open)
                log.error("%d captured rows lost at shutdown: %s", lost, exc)

    def rename(self, key: str) -> str:
        """A fresh key for a shard whose name collided in object storage."""
        with self._lock:
            sequence = self._take_sequence()
        return shard_key(self.sidecar_id, sequence, self._clock())

    def replaced(self) -> bool:
        return False

    def reopen(self) -> None:
        return None

    def _seal(self) -> None:
        table = pa.concat_tables(self._open)
        buffer = io.BytesIO()
        pq.write_table(table, buffer, compression="zstd")
        key = shard_key(self.sidecar_id, self._next, self._clock())
        self.spool.add(key, buffer.getvalue())
        self._take_sequence()
        self._open, self._open_bytes = [], 0
        self._metrics.sealed.inc()
        self.on_sealed()

    def _take_sequence(self) -> int:
        sequence = self._next
        self._next += 1
        return sequence
