"""The DuckDB store: migrations, appends, and the faults it must notice (corrupt, deleted)."""

import re

import pyarrow as pa
import pytest

from monitor.faults import Faults, InjectedFault
from monitor.schema import MIGRATIONS
from monitor.store import CREATING_SUFFIX, Store, StoreCorruptError, StoreError


def test_migrations_apply_once_and_reopen(tmp_path):
    path = tmp_path / "d.duckdb"
    store = Store.open(path)
    assert store.schema_version() == MIGRATIONS[-1].version
    assert store.migrate() == []  # nothing pending the second time
    store.close()
    reopened = Store.open(path)
    assert reopened.query("SELECT count(*) FROM schema_migrations")[0][0] == len(MIGRATIONS)


def test_migration_versions_are_increasing_and_unique():
    versions = [m.version for m in MIGRATIONS]
    assert versions == sorted(set(versions)) and versions[0] == 1


def test_append_rejects_unknown_table(tmp_path):
    store = Store.open(tmp_path / "d.duckdb")
    with pytest.raises(StoreError, match="unknown table 'nope'"):
        store.append("nope", pa.table({"a": [1]}))


def test_unwritable_path_is_a_store_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(StoreError, match="cannot open DuckDB file"):
        Store.open(blocker / "sub" / "d.duckdb")


def corrupt(path) -> None:
    """Overwrite bytes in the middle of a real DuckDB file that holds rows."""
    store = Store.open(path)
    store.execute(
        "INSERT INTO requests (request_id, started_at, route, stream, request_json, status_code)"
        " SELECT 'r' || i, now(), 'chat_completions', false, repeat('x', 200) || i, 200"
        " FROM range(20000) t(i)"
    )
    store.execute("CHECKPOINT")  # the rows into the file itself, not only its WAL
    store.close()
    size = path.stat().st_size
    with path.open("r+b") as handle:
        handle.seek(size // 2)
        handle.write(b"\xde\xad\xbe\xef" * 256)


def test_a_mangled_block_is_refused_at_open_naming_the_file(tmp_path):
    path = tmp_path / "d.duckdb"
    corrupt(path)
    with pytest.raises(StoreCorruptError, match=re.escape(f"DuckDB file {path} is corrupt")):
        Store.open(path, verify=True)


def test_an_empty_file_left_by_our_failed_open_is_removed(tmp_path):
    path = tmp_path / "d.duckdb"
    path.write_bytes(b"")  # what a failed creation leaves: the file, and our marker beside it
    (tmp_path / ("d.duckdb" + CREATING_SUFFIX)).write_bytes(b"")
    store = Store.open(path)
    assert store.schema_version() == MIGRATIONS[-1].version
    assert not (tmp_path / ("d.duckdb" + CREATING_SUFFIX)).exists()


def test_an_empty_file_that_is_not_ours_is_refused(tmp_path):
    path = tmp_path / "d.duckdb"
    path.write_bytes(b"")
    with pytest.raises(StoreCorruptError, match=re.escape("is empty (0 bytes) and no failed open")):
        Store.open(path)
    assert path.exists()  # left for the operator


def test_a_deleted_file_is_noticed_and_reopened_fresh(tmp_path):
    path = tmp_path / "d.duckdb"
    store = Store.open(path)
    store.execute("INSERT INTO schema_migrations VALUES (999, 'marker', now())")
    assert not store.replaced()
    path.unlink()
    assert store.replaced()
    store.reopen()
    assert not store.replaced()
    assert store.query("SELECT count(*) FROM schema_migrations WHERE version = 999") == [(0,)]


def test_settings_bound_duckdb(tmp_path):
    store = Store.open(tmp_path / "d.duckdb", memory_limit_bytes=128 * 2**20, threads=1)
    assert store.query("SELECT current_setting('memory_limit'), current_setting('threads')") == [
        ("128.0 MiB", 1)
    ]


def test_an_armed_fault_fails_the_next_append(tmp_path):
    faults = Faults("store.append=raise:1")
    store = Store.open(tmp_path / "d.duckdb", faults=faults)
    batch = pa.table({"version": [999], "name": ["x"]})
    with pytest.raises(InjectedFault, match=re.escape("store.append")):
        store.append("schema_migrations", batch)
    assert store.append("schema_migrations", batch) == 1  # the count was one
