"""The adapter registry on a real DuckDB file: versions, allowed status moves, lineage."""

import pytest

from driftloop.schema import MIGRATIONS
from monitor.store import Store
from retrain.adapter_registry import AdapterRegistry, AdapterRegistryError, Status, check_name


@pytest.fixture
def registry(tmp_path):
    store = Store.open(tmp_path / "r.duckdb", migrations=MIGRATIONS)
    yield AdapterRegistry(store)
    store.close()


def test_versions_count_up_per_alias_with_versioned_served_names(registry):
    a = registry.register("support", "aaaa1111", "/x/a", dataset_id="d1", run_id="r1")
    b = registry.register("support", "bbbb2222", "/x/b", dataset_id="d2", run_id="r2")
    c = registry.register("sales", "cccc3333", "/x/c", dataset_id=None, run_id=None)
    assert (a.version, a.served_name) == (1, "support-v1")
    assert (b.version, b.served_name) == (2, "support-v2")
    assert (c.version, c.served_name) == (1, "sales-v1")
    assert [x.id for x in registry.versions("support")] == ["bbbb2222", "aaaa1111"]


def test_the_same_weights_cannot_be_registered_twice(registry):
    registry.register("support", "aaaa1111", "/x/a", dataset_id=None, run_id=None)
    with pytest.raises(AdapterRegistryError, match="already registered as support-v1"):
        registry.register("support", "aaaa1111", "/x/a", dataset_id=None, run_id=None)


def test_only_allowed_transitions_happen_and_each_is_recorded(registry):
    a = registry.register("support", "aaaa1111", "/x/a", dataset_id=None, run_id=None)
    with pytest.raises(AdapterRegistryError, match="training; it cannot become production"):
        registry.transition(a.id, Status.PRODUCTION, actor="loop", reason="skip the gate")
    for status in (Status.EVALUATING, Status.STAGING, Status.PRODUCTION, Status.DEPRECATED):
        registry.transition(a.id, status, actor="loop", reason=f"to {status}")
    assert registry.get(a.id).status is Status.DEPRECATED
    events = registry.events(a.id)
    assert [e["to_status"] for e in events] == [
        "training",
        "evaluating",
        "staging",
        "production",
        "deprecated",
    ]
    assert events[3]["from_status"] == "staging" and events[3]["reason"] == "to production"


def test_failed_is_final(registry):
    a = registry.register("support", "aaaa1111", "/x/a", dataset_id=None, run_id=None)
    registry.transition(a.id, Status.FAILED, actor="loop", reason="trainer crashed")
    with pytest.raises(AdapterRegistryError, match=r"allowed: none"):
        registry.transition(a.id, Status.EVALUATING, actor="operator", reason="retry")


def test_retention_keeps_the_newest_versions_that_served(registry):
    ids = ["aaaa1111", "bbbb2222", "cccc3333", "dddd4444"]
    for adapter_id in ids:
        registry.register("support", adapter_id, f"/x/{adapter_id}", dataset_id=None, run_id=None)
        registry.transition(adapter_id, Status.EVALUATING, actor="loop", reason="trained")
        registry.transition(adapter_id, Status.STAGING, actor="loop", reason="gate passed")
        current = registry.production("support")
        if current is not None:
            registry.transition(current.id, Status.DEPRECATED, actor="loop", reason="replaced")
        registry.transition(adapter_id, Status.PRODUCTION, actor="loop", reason="deploy")
    assert registry.production("support").id == "dddd4444"
    # newest first among deprecated: keep 2 -> the oldest one is past retention
    assert [a.id for a in registry.past_retention("support", keep=2)] == ["aaaa1111"]


def test_lineage_names_dataset_and_run(registry):
    registry.store.execute(
        "INSERT INTO datasets VALUES ('d1', 'support', now(), '/ds/d1', '{\"counts\": {}}')"
    )
    registry.store.execute(
        "INSERT INTO retrain_runs (id, model_alias, trigger, reason, started_at, status,"
        " drift_run_id) VALUES ('r1', 'support', 'drift', 'signal tripped', now(), 'running', 7)"
    )
    registry.register("support", "aaaa1111", "/x/a", dataset_id="d1", run_id="r1")
    lineage = registry.lineage("aaaa1111")
    assert lineage["dataset"]["manifest"] == {"counts": {}}
    assert lineage["run"]["drift_run_id"] == 7 and lineage["run"]["trigger"] == "drift"


@pytest.mark.parametrize(
    "bad", ["../etc", "a/b", "", ".hidden", "x" * 65, "a..b", "name with space"]
)
def test_names_that_could_escape_a_path_are_refused(bad):
    with pytest.raises(AdapterRegistryError, match="is not allowed"):
        check_name("alias", bad)
