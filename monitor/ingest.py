"""The controller's ingest: every capture shard in object storage, loaded into DuckDB exactly once.

Each pass lists the last few hours' partitions (and, every ``full_scan_every`` passes, the whole
prefix, for shards a sidecar uploaded late from its spool), skips keys already in
``ingested_shards``, and loads the rest oldest first. A shard and its bookkeeping row commit
together (``monitor.capture_table``), so a controller killed mid-pass resumes where it stopped.
A shard that cannot be read as a capture shard is quarantined: recorded with the reason,
counted, never retried. Object storage being down ends the pass; the next one retries.
"""

from __future__ import annotations

import io
import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

from monitor.capture_table import (
    SHARD_SCHEMA,
    ShardInfo,
    ingest_shard,
    ingested_keys,
    quarantine_shard,
)
from monitor.fleet_metrics import IngestMetrics
from monitor.object_store import ObjectStore, ObjectStoreError, StoredObject
from monitor.shard_spool import PREFIX, sidecar_of
from monitor.store import Store

log = logging.getLogger(__name__)


class ShardIngest:
    def __init__(
        self,
        store: Store,
        objects: ObjectStore,
        metrics: IngestMetrics,
        *,
        lookback_hours: int = 2,
        full_scan_every: int = 30,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store, self.objects, self.metrics = store, objects, metrics
        self._lookback_hours, self._full_scan_every = lookback_hours, full_scan_every
        self._clock = clock
        self._done = ingested_keys(store)
        self._passes = 0
        self.problem: str | None = None
        self.last_pass_at: float | None = None

    def run(self) -> int:
        """One pass; returns the rows loaded."""
        full = self._passes % self._full_scan_every == 0
        self._passes += 1
        try:
            listed = self._list(full)
        except ObjectStoreError as exc:
            self._down(str(exc))
            return 0
        waiting = sorted((o for o in listed if o.key not in self._done), key=_age_order)
        rows, reachable = 0, True
        for shard in waiting:
            try:
                rows += self._load(shard)
            except ObjectStoreError as exc:
                self._down(str(exc))
                reachable = False
                break
        if reachable:
            self.problem = None
            self.metrics.store_up.set(1)
        self.last_pass_at = self._clock()
        left = [o for o in waiting if o.key not in self._done]
        oldest = min((o.last_modified.timestamp() for o in left), default=None)
        self.metrics.lag.set(0.0 if oldest is None else max(self._clock() - oldest, 0.0))
        return rows

    def health(self) -> dict[str, object]:
        return {
            "object_store": self.objects.url,
            "problem": self.problem,
            "shards_done": len(self._done),
            "last_pass_at": self.last_pass_at,
        }

    def _list(self, full: bool) -> list[StoredObject]:
        if full:
            return self.objects.list(PREFIX)
        now = datetime.fromtimestamp(self._clock(), UTC)
        found: list[StoredObject] = []
        for hours_ago in range(self._lookback_hours, -1, -1):
            hour = now - timedelta(hours=hours_ago)
            found += self.objects.list(f"{PREFIX}date={hour:%Y-%m-%d}/hour={hour:%H}/")
        return found

    def _load(self, shard: StoredObject) -> int:
        info = ShardInfo(shard.key, sidecar_of(shard.key), shard.size, shard.last_modified)
        data = self.objects.get(shard.key)
        try:
            table = read_shard(data)
        except ValueError as exc:
            log.error("quarantined shard %s: %s", shard.key, exc)
            quarantine_shard(self.store, info, str(exc))
            self._done.add(shard.key)
            self.metrics.shards.labels(outcome="quarantined").inc()
            return 0
        try:
            ingest_shard(self.store, info, table)
        except duckdb.ConstraintException:  # another pass (or controller) loaded it first
            self._done.add(shard.key)
            return 0
        self._done.add(shard.key)
        self.metrics.shards.labels(outcome="ingested").inc()
        self.metrics.rows.inc(table.num_rows)
        return table.num_rows

    def _down(self, message: str) -> None:
        if self.problem != message:
            log.error("ingest cannot reach object storage: %s", message)
        self.problem = message
        self.metrics.store_up.set(0)


def read_shard(data: bytes) -> pa.Table:
    """A shard's rows in ``SHARD_SCHEMA``; ``ValueError`` naming the fault when it is not one."""
    try:
        table = pq.read_table(io.BytesIO(data))
    except Exception as exc:  # pyarrow raises ArrowInvalid, OSError, ... for a mangled file
        raise ValueError(f"not a readable Parquet file: {exc}") from None
    missing = [name for name in SHARD_SCHEMA.names if name not in table.column_names]
    if missing:
        raise ValueError(f"not a capture shard: missing columns {missing}")
    try:
        return table.select(SHARD_SCHEMA.names).cast(SHARD_SCHEMA)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        raise ValueError(f"columns of the wrong type: {exc}") from None


def _age_order(shard: StoredObject) -> tuple[datetime, str]:
    return shard.last_modified, shard.key
