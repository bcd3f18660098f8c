"""The teacher against a real scripted OpenAI-compatible server and a real DuckDB file.

Drifted prompts come from a drift evaluation's drifted prompts (as the drift job records them);
answers that break the house format or a rule are filtered and counted; errors, timeouts and a
spent budget are counted; a run left with too few labels is suppressed, with the reason.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from prometheus_client import CollectorRegistry

from driftloop.schema import MIGRATIONS
from judges.budget import DailyBudget
from judges.client import Endpoint
from judges.plugins import build_rule_judge
from monitor.aliases import AliasTable
from monitor.store import Store
from monitor.vllm_admin import VLLMAdmin
from retrain.adapter_registry import AdapterRegistry
from retrain.data.teacher import Teacher, TeacherJudge, TeacherSettings, teacher_spent
from retrain.loop import LoopSettings, RetrainLoop
from retrain.metrics import LoopMetrics
from retrain.serving.deploy import Deployer
from retrain.triggers import Trigger, TriggerDecision, Triggers, TriggerSettings, TriggerVerdict
from tests.judges.conftest import (  # judge_server: a fixture, used by name
    BARS,
    calibrate_against,
    judge_server,  # noqa: F401
    rubric_judge,
)
from tests.judges.judge_server import Reply, ScriptedJudge, verdict
from tests.servers import serve_in_thread

NOW = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)
POLICY = "Answer tech-support problems starting with 'HelpDesk: '."
SHOTS = (("My mouse is not responding.", "HelpDesk: Try another USB port."),)
PROBLEMS = [f"My device number {i} is broken." for i in range(30)]


@pytest.fixture
def store(tmp_path) -> Iterator[Store]:
    s = Store.open(tmp_path / "teacher.duckdb", migrations=MIGRATIONS)
    yield s
    s.close()


@pytest.fixture
def server() -> Iterator[ScriptedJudge]:
    teacher = ScriptedJudge()
    teacher.respond = lambda messages: Reply("HelpDesk: " + "restart it and check the cable.")
    with serve_in_thread(teacher.app) as url:
        teacher.url = f"{url}/v1"
        yield teacher


def drifted_evaluation(store: Store, prompts: list[str]) -> int:
    """Capture ``prompts`` and record a drift evaluation whose drifted prompts are them."""
    ids = []
    for i, prompt in enumerate(prompts):
        request_id = f"req{i:04d}"
        ids.append(request_id)
        store.execute(
            "INSERT INTO requests (request_id, started_at, route, model_alias, stream,"
            " prompt_text, response_text, status_code) VALUES (?, ?, 'chat_completions',"
            " 'support', false, ?, 'base answer', 200)",
            [request_id, NOW - timedelta(seconds=len(prompts) - i), prompt],
        )
    for signal, details in (
        ("prompt_embedding", {"drifted_request_ids": ids}),
        ("combined", {"family": ["prompt_embedding"]}),
    ):
        store.execute(
            "INSERT INTO drift_runs (run_at, model_alias, signal, n_reference, n_current, drifted,"
            " reason, details) VALUES (?, 'support', ?, 100, 100, true, 'x', ?)",
            [NOW, signal, json.dumps(details)],
        )
    return int(store.query("SELECT max(id) FROM drift_runs WHERE signal = 'combined'")[0][0])


def teacher(
    store: Store, url: str, *, requests: int = 1000, rules: tuple[str, ...] = ("refusal", "empty"),
    judge: TeacherJudge | None = None, **endpoint: object,
) -> Teacher:  # fmt: skip
    settings = {"timeout_s": 5.0, "max_retries": 1, "backoff_s": 0.01, **endpoint}
    ep = Endpoint(url, "scripted-teacher", **settings)  # type: ignore[arg-type]
    budget = DailyBudget(
        100_000, requests, clock=lambda: NOW, spent_on=teacher_spent(store, ep.model)
    )
    return Teacher(
        store,
        TeacherSettings(ep, POLICY, SHOTS, format_pattern="^HelpDesk: ", concurrency=4),
        [build_rule_judge(kind, {}) for kind in rules],
        budget,
        judge=judge,
        clock=lambda: NOW,
    )


def test_labels_drifted_prompts_keeping_only_answers_that_pass_every_check(store, server):
    replies = {
        PROBLEMS[0]: "Just restart it.",  # off-policy: no house format
        PROBLEMS[1]: "HelpDesk: I'm sorry, I can't help with that.",  # a refusal
        PROBLEMS[2]: "   ",  # empty
    }
    server.respond = lambda messages: Reply(
        replies.get(messages[-1]["content"], "HelpDesk: restart it and check the cable.")
    )
    # the same problem twice (case and punctuation apart) is asked once
    drift_id = drifted_evaluation(store, [*PROBLEMS[:6], PROBLEMS[3].upper() + "!!"])

    labels = teacher(store, server.url).label("support", "run1", drift_id)

    assert labels.prompts == 6 and server.attempts == 6
    assert dict(labels.outcomes) == {"accepted": 3, "format": 1, "refusal": 1, "empty": 1}
    assert labels.acceptance == 0.5
    assert sorted(e["ref"] for e in labels.examples) == ["req0003", "req0004", "req0005"]
    assert {e["source"] for e in labels.examples} == {"teacher"}
    assert labels.examples[0]["messages"][1]["content"].startswith("HelpDesk: ")
    # what the teacher was asked: the house policy, the few-shot turn, then the drifted prompt
    asked = server.requests[0]["messages"]
    assert asked[0] == {"role": "system", "content": POLICY}
    assert [m["content"] for m in asked[1:3]] == list(SHOTS[0])
    assert server.requests[0]["temperature"] == 0
    rows = store.query(
        "SELECT outcome, count(*), sum(prompt_tokens + completion_tokens) FROM teacher_calls"
        " WHERE run_id = 'run1' GROUP BY outcome ORDER BY outcome"
    )
    assert rows == [
        ("accepted", 3, 396),
        ("empty", 1, 132),
        ("format", 1, 132),
        ("refusal", 1, 132),
    ]
    assert labels.tokens == 6 * 132
    assert "accepted 3 (50%)" in labels.note()


def test_errors_and_timeouts_are_retried_then_counted_by_kind(store, server):
    def respond(messages):
        if messages[-1]["content"] == PROBLEMS[0]:
            return Reply(status=500)
        if messages[-1]["content"] == PROBLEMS[1]:
            return Reply(delay_s=2.0)
        return Reply("HelpDesk: restart it and check the cable.")

    server.respond = respond
    drift_id = drifted_evaluation(store, PROBLEMS[:4])

    labels = teacher(store, server.url, timeout_s=0.5).label("support", "run1", drift_id)

    assert dict(labels.outcomes) == {"accepted": 2, "error:status_500": 1, "error:timeout": 1}
    assert labels.calls == 2 + 2 + 2  # one retry for each failing prompt
    [(attempts,)] = store.query(
        "SELECT attempts FROM teacher_calls WHERE outcome = 'error:status_500'"
    )
    assert attempts == 2


def test_the_daily_budget_stops_calls_and_is_read_back_after_a_restart(store, server):
    drift_id = drifted_evaluation(store, PROBLEMS[:5])

    labels = teacher(store, server.url, requests=3).label("support", "run1", drift_id)
    assert dict(labels.outcomes) == {"accepted": 3, "budget": 2}
    assert server.attempts == 3

    again = teacher(store, server.url, requests=3).label("support", "run2", drift_id)
    assert dict(again.outcomes) == {"budget": 5} and server.attempts == 3


def test_a_run_with_too_few_accepted_labels_is_suppressed_naming_the_outcomes(
    store, server, tmp_path
):
    server.respond = lambda messages: Reply("No house format here, sorry about that.")
    drift_id = drifted_evaluation(store, PROBLEMS[:25])
    registry = CollectorRegistry()
    metrics = LoopMetrics(registry)
    models = AdapterRegistry(store)
    admin = VLLMAdmin("http://127.0.0.1:9")  # never called: the run stops before training

    def never(*args, **kwargs):
        raise AssertionError("a suppressed run must not train, gate or deploy")

    loop = RetrainLoop(
        store,
        models,
        Deployer(models, admin, AliasTable({"support": "base"}), metrics, base_model="base"),
        Triggers(
            store,
            metrics,
            TriggerSettings(),
            tmp_path / "locks",
            available_examples=lambda alias: 25,
        ),
        metrics,
        LoopSettings(datasets_dir=tmp_path / "datasets", lock_dir=tmp_path / "locks"),
        trainer=never,
        gate=never,
        aliases=lambda: ["support"],
        teacher=teacher(store, server.url),
    )
    decision = TriggerDecision(Trigger.DRIFT, TriggerVerdict.TRIGGERED, "drifted", drift_id)

    result = loop.run("support", decision)

    assert result.status == "suppressed"
    assert "only 0 training examples after the teacher" in result.reason
    assert "'format': 25" in result.reason and "need 20" in result.reason
    [(status, error, timeline)] = store.query(
        "SELECT status, error, timeline FROM retrain_runs WHERE id = ?", [result.run_id]
    )
    assert status == "suppressed" and "0 of 25 drifted prompts accepted" in error
    stages = [entry["stage"] for entry in json.loads(timeline)]
    assert stages == ["teacher", "dataset", "cost"]
    teacher_entry = json.loads(timeline)[0]
    assert teacher_entry["teacher"]["outcomes"] == {"format": 25}
    assert (
        registry.get_sample_value(
            "driftloop_retrain_runs_total", {"model": "support", "outcome": "suppressed"}
        )
        == 1
    )


def test_the_llm_judge_filters_teacher_answers_only_once_calibrated(
    store,
    server,
    judge_server,  # noqa: F811  (the fixture imported above)
):
    server.respond = lambda messages: Reply(
        "HelpDesk: restart it." if messages[-1]["content"] in PROBLEMS[:2] else "HelpDesk: ok."
    )
    drift_id = drifted_evaluation(store, PROBLEMS[:6])
    judge = TeacherJudge(rubric_judge(judge_server.url), 4.0, **BARS)

    # uncalibrated: never asked, every answer that passes the free checks is kept, and it says why
    labels = teacher(store, server.url, judge=judge).label("support", "run1", drift_id)
    assert judge_server.attempts == 0 and dict(labels.outcomes) == {"accepted": 6}
    assert labels.judge is not None and "not used" in labels.judge
    assert "no calibration on record" in labels.summary()["judge"]

    calibrate_against(store, judge_server, lambda label: verdict(label))  # kappa 1.0 on record
    judge_server.requests.clear()
    judge_server.respond = lambda messages: verdict(
        5 if "restart it" in messages[-1]["content"] else 2
    )

    labels = teacher(store, server.url, judge=judge).label("support", "run2", drift_id)
    assert judge_server.attempts == 6  # one verdict per answer that passed the rule checks
    assert dict(labels.outcomes) == {"accepted": 2, "judge": 4}
    assert labels.judge is not None and labels.judge.startswith("used: helpfulness")
    assert labels.judge_tokens == 6 * 132
    [(reason,)] = store.query(
        "SELECT DISTINCT reason FROM teacher_calls WHERE run_id = 'run2' AND outcome = 'judge'"
    )
    assert reason.startswith("judge score 2 < 4")
