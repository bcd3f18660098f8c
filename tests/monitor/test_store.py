"""The DuckDB store: migrations run once, appends land, bad tables are refused."""

import pyarrow as pa
import pytest

from monitor.schema import MIGRATIONS
from monitor.store import Store, StoreError


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
