"""Every write of captured rows into DuckDB: the local writer's appends and the fleet's shard ingest.

``requests`` gets rows from two places: ``driftloop serve``'s capture writer appends them as
they are captured, and the controller loads shards that sidecars uploaded. Both go through
here, so the table has one writing module. A shard's rows and its ``ingested_shards`` row commit
in one transaction: a crash between the two cannot load a shard twice or mark one never loaded.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Protocol

import pyarrow as pa

from monitor.capture import REQUESTS_SCHEMA
from monitor.faults import Faults
from monitor.store import Store

SIDECAR_COLUMN = "sidecar_id"
SHARD_SCHEMA = REQUESTS_SCHEMA.append(pa.field(SIDECAR_COLUMN, pa.string()))


class CaptureSink(Protocol):
    """Where the capture writer puts rows: a DuckDB ``Store``, or a fleet sidecar's shard sink."""

    @property
    def path(self) -> str | Path: ...
    @property
    def faults(self) -> Faults: ...

    def append(self, table: str, batch: pa.Table) -> int: ...
    def replaced(self) -> bool: ...
    def reopen(self) -> None: ...
    def close(self) -> None: ...


@dataclass(frozen=True)
class ShardInfo:
    key: str
    sidecar_id: str | None
    bytes: int
    uploaded_at: datetime | None


def append_requests(store: CaptureSink, table: pa.Table) -> int:
    """Append captured rows (``REQUESTS_SCHEMA``, optionally with ``sidecar_id``)."""
    return store.append("requests", table)


def ingested_keys(store: Store) -> set[str]:
    """Keys of every shard already loaded or quarantined (both are final)."""
    return {row[0] for row in store.query("SELECT shard_key FROM ingested_shards")}


def ingest_shards(store: Store, shards: list[tuple[ShardInfo, pa.Table]]) -> None:
    """Load shards' rows and record the shards, all in one transaction; a key seen before fails it.

    Loading many shards per commit is what makes ingest fast: DuckDB writes an insert of a
    row group or more (122,880 rows) straight to the file, smaller ones go through its WAL first,
    and each commit has a fixed cost.
    """
    if not shards:
        return
    table = pa.concat_tables([rows for _, rows in shards])
    columns = ", ".join(f'"{name}"' for name in table.column_names)
    with store.transaction() as cur:
        # The primary key refuses a second load of a key before any row is inserted.
        cur.executemany(
            "INSERT INTO ingested_shards (shard_key, sidecar_id, status, rows, bytes, uploaded_at)"
            " VALUES (?, ?, 'ingested', ?, ?, ?)",
            [[i.key, i.sidecar_id, rows.num_rows, i.bytes, i.uploaded_at] for i, rows in shards],
        )
        cur.register("_shard_rows", table)
        try:
            # Column names come from the checked shard schema; values travel as Arrow.
            cur.execute(f"INSERT INTO requests ({columns}) SELECT {columns} FROM _shard_rows")
        finally:
            cur.unregister("_shard_rows")


def quarantine_shard(store: Store, shard: ShardInfo, error: str) -> None:
    """Record a shard that cannot be loaded, so that it is counted once and never retried."""
    store.execute(
        "INSERT INTO ingested_shards"
        " (shard_key, sidecar_id, status, rows, bytes, error, uploaded_at)"
        " VALUES (?, ?, 'quarantined', 0, ?, ?, ?)",
        [shard.key, shard.sidecar_id, shard.bytes, error[:1000], shard.uploaded_at],
    )
