"""The post-deploy guard on a real DuckDB file: bad live traffic rolls a fresh version back."""

from datetime import UTC, datetime, timedelta

import pytest
from prometheus_client import CollectorRegistry

from driftloop.schema import MIGRATIONS
from monitor.aliases import AliasTable
from monitor.store import Store
from monitor.vllm_admin import VLLMAdmin
from retrain.adapter_registry import AdapterRegistry, Status
from retrain.metrics import LoopMetrics
from retrain.serving.deploy import Deployer
from retrain.serving.guard import GuardSettings, PostDeployGuard

DEPLOYED = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)


@pytest.fixture
def setup(tmp_path):
    store = Store.open(tmp_path / "g.duckdb", migrations=MIGRATIONS)
    registry = AdapterRegistry(store)
    prom = CollectorRegistry()
    aliases = AliasTable({"support": "support-v1"})
    # rolling back to the base model never calls vLLM; a dead address proves it
    deployer = Deployer(
        registry, VLLMAdmin("http://127.0.0.1:9"), aliases, LoopMetrics(prom), "smollm2"
    )
    registry.register("support", "aaaa1111", "/x", dataset_id=None, run_id=None)
    for status in (Status.EVALUATING, Status.STAGING, Status.PRODUCTION):
        registry.transition("aaaa1111", status, actor="loop", reason="test")
    store.execute(
        "INSERT INTO deployments (occurred_at, model_alias, adapter_id, served_name, previous,"
        " action, state, actor, reason) VALUES (?, 'support', 'aaaa1111', 'support-v1',"
        " 'smollm2', 'deploy', 'switched', 'loop', 'test')",
        [DEPLOYED],
    )
    yield store, deployer, aliases, prom
    store.close()


def traffic(store, n, failed=0, served="support-v1", scores=()):
    for i in range(n):
        store.execute(
            "INSERT INTO requests (request_id, started_at, route, model_alias, served_model,"
            " stream, status_code) VALUES (?, ?, 'chat_completions', 'support', ?, false, ?)",
            [f"r{i}", DEPLOYED + timedelta(minutes=1), served, 500 if i < failed else 200],
        )
    for i, score in enumerate(scores):
        store.execute(
            "INSERT INTO judgments (request_id, source, model_alias, judge, content_hash, outcome,"
            " score, created_at) VALUES (?, 'traffic', 'support', 'rubric', ?, 'scored', ?, ?)",
            [f"r{i}", f"h{i}", score, DEPLOYED + timedelta(minutes=2)],
        )


def guard(deployer, minutes_after=10, **settings):
    clock = lambda: DEPLOYED + timedelta(minutes=minutes_after)  # noqa: E731
    return PostDeployGuard(deployer, GuardSettings(min_samples=20, **settings), clock=clock)


def test_failing_requests_roll_back_automatically(setup):
    store, deployer, aliases, prom = setup
    traffic(store, 25, failed=5)
    route = guard(deployer).check("support")
    assert route is not None and route.served_name == "smollm2"
    assert aliases.resolve("support") == "smollm2"
    assert deployer.adapters.get("aaaa1111").status is Status.DEPRECATED
    assert (
        prom.get_sample_value(
            "driftloop_rollbacks_total", {"model": "support", "reason": "automatic"}
        )
        == 1
    )
    [(reason,)] = store.query("SELECT reason FROM deployments WHERE action = 'rollback'")
    assert "5/25 requests to support-v1 failed" in reason


def test_a_low_judge_mean_rolls_back(setup):
    store, deployer, aliases, _ = setup
    traffic(store, 25, scores=[2.0] * 20)
    assert guard(deployer, min_judge_score=2.5).check("support") is not None
    assert aliases.resolve("support") == "smollm2"


@pytest.mark.parametrize(
    ("n", "failed", "minutes_after", "why"),
    [
        (25, 1, 10, "healthy: 4% failed"),
        (10, 5, 10, "too few requests to judge"),
        (25, 5, 120, "outside the watch window"),
    ],
)
def test_no_rollback_when_healthy_too_few_or_too_late(setup, n, failed, minutes_after, why):
    store, deployer, aliases, _ = setup
    assert aliases.resolve("support") == "support-v1"
    traffic(store, n, failed=failed)
    assert guard(deployer, minutes_after, watch_s=3600).check("support") is None, why
    assert deployer.adapters.get("aaaa1111").status is Status.PRODUCTION
    assert aliases.resolve("support") == "support-v1"
