"""The DuckDB file driftloop owns: opening it, migrating it, and batched Arrow appends.

DuckDB allows one process per file, so exactly one ``Store`` per file per process exists; other
components in the process read through ``query``/``records`` and write through ``execute`` and
``append``. The store knows no table of its own: ``open`` applies the migrations it is given
(monitor's by default; ``driftloop.schema.MIGRATIONS`` composes every package's). The store notices when its file is deleted or
replaced under it (``replaced``) and can ``reopen`` the path; ``open`` refuses a corrupt file, and
cleans up an empty file only when a failed open of its own left it.

>>> store = Store.open(":memory:")
>>> store.query("SELECT count(*) FROM requests")
[(0,)]
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa

from monitor.failpoints import failpoint
from monitor.faults import Faults
from monitor.schema import MIGRATIONS, Migration

log = logging.getLogger(__name__)

# Created next to a new database file before DuckDB creates it, removed once it is migrated: an
# empty database file with this marker beside it is provably one of ours whose creation failed.
CREATING_SUFFIX = ".creating"


class StoreError(RuntimeError):
    """The database could not be opened or written; the message names the file."""


class StoreReopenedError(StoreError):
    """An append failed fatally and the store was reopened; ``committed``: its rows are in."""

    def __init__(self, message: str, *, committed: bool) -> None:
        super().__init__(message)
        self.committed = committed


class StoreCorruptError(StoreError):
    """The file is not a readable DuckDB database; retrying will not help, an operator must."""


class Store:
    """One read-write DuckDB connection plus the migrations and append helpers around it."""

    def __init__(
        self,
        con: duckdb.DuckDBPyConnection,
        path: str,
        *,
        settings: dict[str, str | int] | None = None,
        faults: Faults | None = None,
        migrations: Sequence[Migration] = MIGRATIONS,
    ) -> None:
        self._con = con
        self._migrations = ordered(migrations)
        self.path = path
        self._lock = threading.Lock()
        self._tables: set[str] = set()
        self._settings = settings or {}
        self.faults = faults or Faults()
        self._identity = _identity(path)

    @classmethod
    def open(
        cls,
        path: str | Path,
        *,
        memory_limit_bytes: int | None = None,
        threads: int | None = None,
        verify: bool = False,
        faults: Faults | None = None,
        migrations: Sequence[Migration] = MIGRATIONS,
    ) -> Store:
        """Open (creating if needed) and migrate the database at ``path``.

        ``migrations`` are the tables this process uses: monitor's own by default; the service
        passes ``driftloop.schema.MIGRATIONS`` (every package's, in version order).
        ``memory_limit_bytes`` and ``threads`` bound DuckDB's buffer pool and worker threads (its
        defaults are 80% of RAM and one thread per core, too much for a sidecar); ``verify``
        reads every table once so that a mangled block fails here, naming the file, and not in
        a later query.
        """
        target = str(path)
        faults = faults or Faults()
        settings: dict[str, str | int] = {}
        if memory_limit_bytes is not None:
            settings["memory_limit"] = f"{memory_limit_bytes // 1024}KiB"
        if threads is not None:
            settings["threads"] = threads
        con = _connect(target, settings, faults)
        store = cls(con, target, settings=settings, faults=faults, migrations=migrations)
        try:
            store.migrate()
            if verify:
                store.verify()
        except duckdb.Error as exc:
            con.close()
            raise _open_error(target, exc) from exc
        except BaseException:
            con.close()
            raise
        with contextlib.suppress(FileNotFoundError):
            os.remove(target + CREATING_SUFFIX)
        return store

    def replaced(self) -> bool:
        """True when the path no longer names the file this store has open (deleted, swapped)."""
        if self._identity is None:
            return False
        return _identity(self.path) != self._identity

    def reopen(self) -> None:
        """Close the connection and open the path again (a fresh, migrated file if it is gone)."""
        with self._lock:
            with contextlib.suppress(duckdb.Error):
                self._con.close()  # closing first: DuckDB would hand back the cached old file
            self._con = _connect(self.path, self._settings, self.faults)
        try:
            self.migrate()
        except duckdb.Error as exc:
            raise _open_error(self.path, exc) from exc
        self._identity = _identity(self.path)  # only now: a half-opened file is retried
        with contextlib.suppress(FileNotFoundError):
            os.remove(self.path + CREATING_SUFFIX)

    def verify(self) -> None:
        """Read every row of every table; a checksum failure raises ``StoreCorruptError``."""
        for table in sorted(self._tables):
            try:
                # Hashing the whole row makes DuckDB read (and checksum) every block of the table.
                self.query(f'SELECT bit_xor(hash(t)) FROM "{table}" AS t')
            except duckdb.Error as exc:
                raise StoreCorruptError(
                    f"DuckDB file {self.path} is corrupt (table {table}): {exc}; move it aside"
                    " to start capture with a new file, or restore it from a backup"
                ) from exc

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
            for migration in self._migrations:
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
            rows = self._con.execute(
                "SELECT table_name FROM information_schema.tables WHERE table_type = 'BASE TABLE'"
            ).fetchall()
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
        self.faults.check("store.append")
        try:
            with self._lock:
                cur = self._con.cursor()
                try:
                    cur.register("_append_batch", batch)
                    # The table name is checked against the catalogue; values travel as Arrow.
                    cur.execute(
                        f'INSERT INTO "{table}" ({columns}) SELECT {columns} FROM _append_batch'
                    )
                finally:
                    cur.close()
        except duckdb.FatalException as exc:
            # DuckDB invalidates the whole database after a fatal error (a failed checkpoint,
            # say): nothing works until it is reopened, so reopen it here, once.
            log.error("DuckDB file %s failed fatally, reopening it: %s", self.path, exc)
            self.reopen()
            raise StoreReopenedError(
                f"DuckDB file {self.path} failed fatally and was reopened: {exc}",
                committed="COMMIT succeeded" in str(exc),
            ) from exc
        return batch.num_rows

    @contextlib.contextmanager
    def transaction(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """A cursor whose statements commit together, or not at all (an exception rolls back)."""
        self.faults.check("store.append")
        with self._lock:
            cur = self._con.cursor()
            try:
                cur.execute("BEGIN TRANSACTION")
                try:
                    yield cur
                except BaseException:
                    cur.execute("ROLLBACK")
                    raise
                cur.execute("COMMIT")
            finally:
                cur.close()

    def cursor(self) -> duckdb.DuckDBPyConnection:
        """A cursor for reads in this process (DuckDB cursors are cheap and thread-safe to create)."""
        return self._con.cursor()

    def query(self, sql: str, params: list[Any] | None = None) -> list[tuple[Any, ...]]:
        """Run a parameterised read and return all rows (writes go through ``execute``)."""
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

    def execute(self, sql: str, params: list[Any] | None = None) -> list[tuple[Any, ...]]:
        """Run a parameterised write (INSERT, UPDATE, DELETE); returns the RETURNING rows, if any.

        Kept apart from ``query`` so that every write in the code base is one grep away (and
        ``tests/test_table_ownership.py`` can check each table has one writer).
        """
        cur = self.cursor()
        try:
            cur.execute(sql, params or [])
            return cur.fetchall() if cur.description else []
        finally:
            cur.close()

    def close(self) -> None:
        with self._lock:
            self._con.close()


def ordered(migrations: Sequence[Migration]) -> tuple[Migration, ...]:
    """``migrations`` in version order; two with one version are a wiring error."""
    versions = [m.version for m in migrations]
    if len(set(versions)) != len(versions):
        raise ValueError(f"duplicate migration versions in {sorted(versions)}")
    return tuple(sorted(migrations, key=lambda m: m.version))


def _identity(path: str) -> tuple[int, int] | None:
    """(device, inode) of the file at ``path``; None for in-memory or missing files."""
    if path == ":memory:":
        return None
    try:
        info = os.stat(path)
    except FileNotFoundError:
        return None
    return info.st_dev, info.st_ino


def _connect(
    target: str, settings: dict[str, str | int], faults: Faults
) -> duckdb.DuckDBPyConnection:
    """Connect, removing an empty file only when a failed creation of ours provably left it."""
    if target == ":memory:":
        return _configured(duckdb.connect(target), settings)
    path = Path(target)
    marker = Path(target + CREATING_SUFFIX)
    try:
        faults.check("store.open")
        path.parent.mkdir(parents=True, exist_ok=True)
        _remove_our_empty_leftover(path, marker)
        if not path.exists():
            marker.touch()
        return _configured(duckdb.connect(target), settings)
    except (duckdb.Error, OSError) as exc:
        failpoint("store-open-failed")  # crash tests: die before cleaning up, as a kill -9 would
        _remove_our_empty_leftover(path, marker)
        if path.is_file() and path.stat().st_size == 0:
            raise StoreCorruptError(
                f"DuckDB file {target} is empty (0 bytes) and no failed open of driftloop left"
                " it; remove it if nothing else writes there"
            ) from exc
        raise _open_error(target, exc) from exc


def _configured(
    con: duckdb.DuckDBPyConnection, settings: dict[str, str | int]
) -> duckdb.DuckDBPyConnection:
    # SET rather than connect(config=...): a connect() elsewhere in the process with other
    # settings would otherwise be refused instead of sharing the open database.
    try:
        for name, value in settings.items():
            con.execute(f"SET {name} = '{value}'")  # names and values are ours, not user text
    except duckdb.Error:
        con.close()
        raise
    return con


def _remove_our_empty_leftover(path: Path, marker: Path) -> None:
    if not marker.exists():
        return
    with contextlib.suppress(FileNotFoundError):
        if path.stat().st_size == 0:
            log.warning("removing %s: an empty file left by a failed creation", path)
            path.unlink()
    with contextlib.suppress(FileNotFoundError):
        if not path.exists():
            Path(str(path) + ".wal").unlink(missing_ok=True)
            marker.unlink()


def _open_error(target: str, exc: BaseException) -> StoreError:
    text = str(exc)
    if "not a valid DuckDB database" in text or "Corrupt database" in text:
        return StoreCorruptError(
            f"DuckDB file {target} is corrupt: {text}; move it aside to start capture with a"
            " new file, or restore it from a backup"
        )
    return StoreError(f"cannot open DuckDB file {target}: {text}")
