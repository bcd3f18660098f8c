"""Each table is created by one package's migrations and written by one module of that package.

Reads may cross packages (the triggers read drift_runs and judgments); writes may not. The SQL
strings of every product module are scanned, so a second writer (an INSERT in a route handler,
say) fails here, naming the table and both modules.
"""

from __future__ import annotations

import ast
import re
from collections import defaultdict
from pathlib import Path

import pytest

from driftloop.api.schema import MIGRATIONS as API_MIGRATIONS
from driftloop.schema import MIGRATIONS
from judges.schema import MIGRATIONS as JUDGES_MIGRATIONS
from monitor.schema import MIGRATIONS as MONITOR_MIGRATIONS
from monitor.schema import Migration
from retrain.schema import MIGRATIONS as RETRAIN_MIGRATIONS

REPO = Path(__file__).resolve().parent.parent
PRODUCT = ("monitor", "judges", "retrain", "driftloop", "dashboards")

# package -> its migrations (driftloop's are the control API's audit_log and routing_changes)
PACKAGE_MIGRATIONS: dict[str, tuple[Migration, ...]] = {
    "monitor": MONITOR_MIGRATIONS,
    "judges": JUDGES_MIGRATIONS,
    "retrain": RETRAIN_MIGRATIONS,
    "driftloop": API_MIGRATIONS,
}

# table -> the one module that writes it (INSERT, UPDATE, DELETE or Store.append)
WRITERS = {
    "requests": "monitor/capture_table.py",
    "ingested_shards": "monitor/capture_table.py",
    "embeddings": "monitor/embedding_job.py",
    "drift_references": "monitor/references.py",
    "drift_runs": "monitor/drift_job.py",
    "audit_log": "driftloop/api/audit.py",
    "routing_changes": "driftloop/api/routing_log.py",
    "judgments": "judges/judgments.py",
    "judge_anchor_runs": "judges/anchors.py",
    "judge_calibrations": "judges/calibration_records.py",
    "feedback": "retrain/feedback.py",
    "retrain_runs": "retrain/runs.py",
    "retrain_decisions": "retrain/runs.py",
    "datasets": "retrain/data/catalog.py",
    "adapters": "retrain/adapter_registry.py",
    "adapter_events": "retrain/adapter_registry.py",
    "evaluations": "retrain/gate/evaluations.py",
    "deployments": "retrain/serving/deployments.py",
    "fleet_adapters": "retrain/serving/fleet.py",
    "canaries": "retrain/serving/canary.py",
    "teacher_calls": "retrain/data/teacher.py",
    "loop_controls": "retrain/switches.py",
    "schema_migrations": "monitor/store.py",  # the store's own bookkeeping
}

# Writes still sent through Store.query in the drift engineer's modules (issue 16 switches them
# to Store.execute); listed so that the list shrinks, never grows.
WRITES_THROUGH_QUERY_PENDING = {"monitor/references.py", "monitor/drift_job.py"}

# SQL in this code base is upper case; matching case-sensitively keeps prose ("update the ...")
# in docstrings out. ``DO UPDATE SET`` (an upsert) names no table of its own.
CREATE = re.compile(r"\bCREATE\s+TABLE\s+(?:IF\s+NOT\s+EXISTS\s+)?\"?(\w+)")
ALTER = re.compile(r"\bALTER\s+TABLE\s+\"?(\w+)")
WRITE = re.compile(
    r"\b(?:INSERT\s+(?:OR\s+\w+\s+)?INTO|UPDATE|DELETE\s+FROM)\s+(?!SET\b)\"?(\w+)\"?[\s(]"
)


def product_modules() -> list[Path]:
    return sorted(p for package in PRODUCT for p in (REPO / package).rglob("*.py"))


def sql_texts(tree: ast.AST) -> list[str]:
    """Every string literal; f-strings with their placeholders as ``{}`` (never a table name)."""
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            out.append(node.value)
        elif isinstance(node, ast.JoinedStr):
            out.append(
                "".join(v.value if isinstance(v, ast.Constant) else "{}" for v in node.values)
            )
    return out


def appended_tables(tree: ast.AST) -> list[str]:
    """Tables named in ``<anything>.append("table", batch)`` calls."""
    return [
        node.args[0].value
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr == "append"
        and len(node.args) == 2
        and isinstance(node.args[0], ast.Constant)
        and isinstance(node.args[0].value, str)
    ]


def writers_by_table(modules: list[Path]) -> dict[str, set[str]]:
    found: dict[str, set[str]] = defaultdict(set)
    for path in modules:
        rel = path.relative_to(REPO).as_posix()
        tree = ast.parse(path.read_text(encoding="utf-8"))
        # DDL lives in migrations; only the store's own bookkeeping table is created in code
        for text in sql_texts(tree):
            for table in WRITE.findall(text):
                found[table.lower()].add(rel)
        for table in appended_tables(tree):
            if table in WRITERS:
                found[table].add(rel)
    return found


def created_by_package() -> dict[str, set[str]]:
    created: dict[str, set[str]] = defaultdict(set)
    for package, migrations in PACKAGE_MIGRATIONS.items():
        for migration in migrations:
            for table in CREATE.findall(migration.sql):
                created[table.lower()].add(package)
    return created


def test_the_service_applies_every_package_migration_once_in_version_order():
    every = [m for migrations in PACKAGE_MIGRATIONS.values() for m in migrations]
    assert sorted(m.version for m in every) == [m.version for m in MIGRATIONS]
    assert len({m.version for m in every}) == len(every)


def test_each_table_is_created_by_exactly_one_package():
    created = created_by_package()
    shared = {table: packages for table, packages in created.items() if len(packages) > 1}
    assert not shared, f"tables created by more than one package: {shared}"
    assert set(created) == set(WRITERS) - {"schema_migrations"}


def test_a_migration_alters_only_its_own_package_tables():
    owner = {table: next(iter(p)) for table, p in created_by_package().items()}
    wrong = [
        (package, m.version, table)
        for package, migrations in PACKAGE_MIGRATIONS.items()
        for m in migrations
        for table in ALTER.findall(m.sql)
        if owner.get(table.lower()) != package
    ]
    assert not wrong, f"migrations altering another package's table: {wrong}"


def test_no_product_module_creates_a_table_outside_the_migrations():
    stray = [
        (path.relative_to(REPO).as_posix(), table)
        for path in product_modules()
        if path.name != "schema.py"
        for text in sql_texts(ast.parse(path.read_text(encoding="utf-8")))
        for table in CREATE.findall(text)
        if table.lower() != "schema_migrations"
    ]
    assert not stray


def test_each_table_has_exactly_one_writer_module_in_its_own_package():
    found = writers_by_table(product_modules())
    several = {table: sorted(mods) for table, mods in found.items() if len(mods) > 1}
    assert not several, f"tables written by more than one module: {several}"
    assert {table: next(iter(mods)) for table, mods in found.items()} == WRITERS
    owner = {table: next(iter(p)) for table, p in created_by_package().items()}
    for table, module in WRITERS.items():
        if table in owner:
            assert module.split("/")[0] == owner[table], (table, module)


def test_writes_go_through_execute_or_append_not_query():
    offenders = set()
    for path in product_modules():
        rel = path.relative_to(REPO).as_posix()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr in ("query", "records")
                and node.args
                and any(WRITE.search(text) for text in sql_texts(node.args[0]))
            ):
                offenders.add(rel)
    assert offenders <= WRITES_THROUGH_QUERY_PENDING, sorted(offenders)
    stale = WRITES_THROUGH_QUERY_PENDING - offenders
    assert not stale, f"{sorted(stale)} now write through execute: drop them from the list"


@pytest.mark.parametrize(
    ("sql", "table"),
    [
        ("INSERT INTO feedback (id) VALUES (?)", "feedback"),
        ("INSERT OR IGNORE INTO datasets (id) VALUES (?)", "datasets"),
        ("UPDATE retrain_runs SET status = ? WHERE id = ?", "retrain_runs"),
        ('DELETE FROM "embeddings" WHERE request_id = ?', "embeddings"),
    ],
)
def test_the_scanner_sees_every_kind_of_write(sql, table):
    assert WRITE.findall(sql) == [table]
