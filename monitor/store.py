"""The DuckDB file driftloop owns: opening it, migrating it, and batched Arrow appends.

DuckDB allows one process per file, so exactly one ``Store`` per file per process exists; other
components in the process read through ``cursor()``.

>>> store = Store.open(":memory:")
>>> store.schema_version()
1
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa

from monitor.schema import MIGRATIONS


class StoreError(RuntimeError):
    """The database could not be opened or written; the message names the file."""


class Store:
    """One read-write DuckDB connection plus the migrations and append helpers around it."""

    def __init__(self, con: duckdb.DuckDBPyConnection, path: str) -> None:
        self._con = con
        self.path = path
        self._lock = threading.Lock()
        self._tables: set[str] = set()

    @classmethod
    def open(cls, path: str | Path) -> Store:
        """Open (creating if needed) and migrate the database at ``path``."""
        target = str(path)
        try:
            if target != ":memory:":
                Path(target).parent.mkdir(parents=True, exist_ok=True)
            con = duckdb.connect(target)
        except (duckdb.IOException, OSError) as exc:
            raise StoreError(f"cannot open DuckDB file {target}: {exc}") from exc
        store = cls(con, target)
        store.migrate()
        return store

    def migrate(self) -> list[int]:
        """Apply pending migrations in one transaction each; return the versions applied."""
        with self._lock:
            self._con.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations ("
                " version INTEGER PRIMARY KEY, name VARCHAR NOT NULL,"
                " applied_at TIMESTAMPTZ NOT NULL DEFAULT now())"
            )
            done = {
                row[0]
                for row in self._con.execute("SELECT version FROM schema_migrations").fetchall()
            }
            applied = []
            for migration in MIGRATIONS:
                if migration.version in done:
                    continue
                self._con.execute("BEGIN TRANSACTION")
                try:
                    self._con.execute(migration.sql)
                    self._con.execute(
                        "INSERT INTO schema_migrations (version, name) VALUES (?, ?)",
                        [migration.version, migration.name],
                    )
                    self._con.execute("COMMIT")
                except Exception:
                    self._con.execute("ROLLBACK")
                    raise
                applied.append(migration.version)
            rows = self._con.execute("SELECT table_name FROM information_schema.tables").fetchall()
            self._tables = {row[0] for row in rows}
            return applied

    def schema_version(self) -> int:
        row = self.cursor().execute("SELECT max(version) FROM schema_migrations").fetchone()
        return int(row[0]) if row and row[0] is not None else 0

    def append(self, table: str, batch: pa.Table) -> int:
        """Append an Arrow table whose columns match ``table`` by name; returns rows written."""
        if table not in self._tables:
            raise StoreError(f"unknown table {table!r}")
        columns = ", ".join(f'"{name}"' for name in batch.column_names)
        with self._lock:
            cur = self._con.cursor()
            try:
                cur.register("_append_batch", batch)
                # The table name is checked against the catalogue above; values travel as Arrow.
                cur.execute(
                    f'INSERT INTO "{table}" ({columns}) SELECT {columns} FROM _append_batch'
                )
            finally:
                cur.close()
        return batch.num_rows

    def cursor(self) -> duckdb.DuckDBPyConnection:
        """A cursor for reads in this process (DuckDB cursors are cheap and thread-safe to create)."""
        return self._con.cursor()

    def query(self, sql: str, params: list[Any] | None = None) -> list[tuple[Any, ...]]:
        """Run a parameterised read and return all rows."""
        cur = self.cursor()
        try:
            return cur.execute(sql, params or []).fetchall()
        finally:
            cur.close()

    def records(self, sql: str, params: list[Any] | None = None) -> list[dict[str, Any]]:
        """Run a parameterised read and return its rows as dicts keyed by column name."""
        cur = self.cursor()
        try:
            cur.execute(sql, params or [])
            names = [d[0] for d in cur.description or []]
            return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]
        finally:
            cur.close()

    def checkpoint(self) -> None:
        with self._lock:
            self._con.execute("CHECKPOINT")

    def close(self) -> None:
        with self._lock:
            self._con.close()
