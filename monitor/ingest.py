"""The controller's ingest: every capture shard in object storage, loaded into DuckDB exactly once.

Each pass lists the last few hours' partitions (and, every ``full_scan_every`` passes, the whole
prefix, for shards a sidecar uploaded late from its spool), skips keys already in
``ingested_shards``, and loads the rest oldest first, as many shards per transaction as make a
DuckDB row group. Shards and their bookkeeping rows commit together
(``monitor.capture_table``), so a controller killed mid-pass resumes where it stopped.
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
    ingest_shards,
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
        rows_per_commit: int = 122_880,
        bytes_per_commit: int = 64 * 2**20,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store, self.objects, self.metrics = store, objects, metrics
        self._lookback_hours, self._full_scan_every = lookback_hours, full_scan_every
        # One DuckDB row group is written past the WAL; the byte cap bounds the memory it takes.
        self._rows_per_commit, self._bytes_per_commit = rows_per_commit, bytes_per_commit
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
        group: list[tuple[ShardInfo, pa.Table]] = []
        group_rows = group_bytes = 0
        try:
            for shard in waiting:
                loaded = self._read(shard)
                if loaded is None:
                    continue
                group.append(loaded)
                group_rows, group_bytes = (
                    group_rows + loaded[1].num_rows,
                    group_bytes + loaded[1].nbytes,
                )
                if group_rows >= self._rows_per_commit or group_bytes >= self._bytes_per_commit:
                    rows += self._commit(group)
                    group, group_rows, group_bytes = [], 0, 0
        except ObjectStoreError as exc:
            self._down(str(exc))
            reachable = False
        rows += self._commit(group)  # what was read before storage went away is kept
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

    def _read(self, shard: StoredObject) -> tuple[ShardInfo, pa.Table] | None:
        """The shard's rows, or None when it was quarantined."""
        info = ShardInfo(shard.key, sidecar_of(shard.key), shard.size, shard.last_modified)
        data = self.objects.get(shard.key)
        try:
            return info, read_shard(data)
        except ValueError as exc:
            log.error("quarantined shard %s: %s", shard.key, exc)
            quarantine_shard(self.store, info, str(exc))
            self._done.add(shard.key)
            self.metrics.shards.labels(outcome="quarantined").inc()
            return None

    def _commit(self, group: list[tuple[ShardInfo, pa.Table]]) -> int:
        """Load ``group`` in one transaction; shard by shard if another loader got to one first."""
        if not group:
            return 0
        try:
            ingest_shards(self.store, group)
        except duckdb.ConstraintException:  # another pass (or controller) loaded one of them
            if len(group) == 1:
                self._done.add(group[0][0].key)
                return 0
            return sum(self._commit([one]) for one in group)
        rows = 0
        for info, table in group:
            self._done.add(info.key)
            rows += table.num_rows
        self.metrics.shards.labels(outcome="ingested").inc(len(group))
        self.metrics.rows.inc(rows)
        return rows

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
