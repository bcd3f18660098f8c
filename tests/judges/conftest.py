"""Fixtures for judge tests: a scripted judge server on 127.0.0.1, a fresh DuckDB store and registry."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta

import pyarrow as pa
import pytest
from prometheus_client import CollectorRegistry

from driftloop.schema import MIGRATIONS
from judges.calibration import CalibrationReport, calibrate
from judges.calibration_records import record_calibration
from judges.client import Endpoint
from judges.examples import CALIBRATION_SET, load_examples
from judges.llm import RubricJudge
from judges.metrics import JudgeMetrics
from judges.rubric import load_rubric
from judges.runner import Runner
from monitor.store import Store
from tests.judges.judge_server import Reply, ScriptedJudge
from tests.servers import serve_in_thread


@pytest.fixture
def judge_server() -> Iterator[ScriptedJudge]:
    server = ScriptedJudge()
    with serve_in_thread(server.app) as url:
        server.url = f"{url}/v1"
        yield server


@pytest.fixture
def store(tmp_path) -> Iterator[Store]:
    store = Store.open(tmp_path / "judges.duckdb", migrations=MIGRATIONS)
    yield store
    store.close()


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


@pytest.fixture
def runner(store, registry) -> Runner:
    return Runner(store, JudgeMetrics(registry), concurrency=4)


def endpoint(url: str, **overrides: object) -> Endpoint:
    settings: dict[str, object] = {"timeout_s": 5.0, "max_retries": 2, "backoff_s": 0.01}
    settings.update(overrides)
    return Endpoint(url, "scripted-judge", **settings)  # type: ignore[arg-type]


def rubric_judge(url: str, **overrides: object) -> RubricJudge:
    return RubricJudge(load_rubric("helpfulness"), endpoint(url, **overrides))


BARS = {"min_kappa": 0.4, "min_parsed": 0.9}


def calibrate_against(
    store: Store, server: ScriptedJudge, respond: Callable[[int], Reply], limit: int = 12
) -> CalibrationReport:
    """Record a calibration of the scripted judge on the first ``limit`` labelled items."""
    items = load_examples(CALIBRATION_SET)[:limit]
    label_of = {e.response: e.label for e in items}
    server.respond = lambda messages: respond(
        next(label for text, label in label_of.items() if text in messages[-1]["content"])
    )
    report = calibrate(rubric_judge(server.url), items, **BARS)  # type: ignore[arg-type]
    record_calibration(store, report, "set-sha")
    return report


def add_requests(
    store: Store, alias: str, pairs: list[tuple[str, str]], start: datetime | None = None
) -> list[str]:
    """Captured exchanges as the sidecar writes them (successful chat completions)."""
    start = start or datetime.now(UTC) - timedelta(minutes=10)
    ids = [uuid.uuid4().hex for _ in pairs]
    table = pa.table(
        {
            "request_id": ids,
            "started_at": [start + timedelta(seconds=i) for i in range(len(pairs))],
            "route": ["chat_completions"] * len(pairs),
            "model_alias": [alias] * len(pairs),
            "stream": [False] * len(pairs),
            "prompt_text": [p for p, _ in pairs],
            "response_text": [r for _, r in pairs],
            "status_code": [200] * len(pairs),
        }
    )
    store.append("requests", table)
    return ids


def sample(registry: CollectorRegistry, name: str, **labels: str) -> float:
    return registry.get_sample_value(name, labels) or 0.0
