"""Retrain triggers on a real DuckDB file: each condition, each safety switch, every decision kept."""

import os
import signal
import subprocess
import sys
import textwrap
from datetime import UTC, datetime, timedelta

import pytest
from prometheus_client import CollectorRegistry

from driftloop.schema import MIGRATIONS
from monitor.store import Store
from retrain.metrics import LoopMetrics
from retrain.switches import set_paused
from retrain.triggers import (
    RunLock,
    Trigger,
    Triggers,
    TriggerSettings,
    TriggerVerdict,
)

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)


@pytest.fixture
def store(tmp_path):
    s = Store.open(tmp_path / "t.duckdb", migrations=MIGRATIONS)
    yield s
    s.close()


def make(store, tmp_path, examples=100, **settings):
    registry = CollectorRegistry()
    triggers = Triggers(
        store,
        LoopMetrics(registry),
        TriggerSettings(**{"volume_examples": None, "quality_bar": None, **settings}),
        lock_dir=tmp_path / "locks",
        available_examples=lambda alias: examples,
        clock=lambda: NOW,
    )
    return triggers, registry


def drift_runs(store, flags, signal_name="combined", later=0):
    """One evaluation a minute, the last ``later`` minutes after NOW."""
    for i, drifted in enumerate(flags):
        store.execute(
            "INSERT INTO drift_runs (run_at, model_alias, signal, n_reference, n_current, drifted,"
            " reason) VALUES (?, 'support', ?, 500, 500, ?, 'x')",
            [NOW + timedelta(minutes=later + i - len(flags)), signal_name, drifted],
        )


def past_run(store, minutes_ago):
    store.execute(
        "INSERT INTO retrain_runs (id, model_alias, trigger, reason, started_at, status)"
        " VALUES (?, 'support', 'drift', 'x', ?, 'shipped')",
        [f"run{minutes_ago}", NOW - timedelta(minutes=minutes_ago)],
    )


def test_drift_trips_after_k_consecutive_drifted_evaluations(store, tmp_path):
    triggers, registry = make(store, tmp_path, drift_consecutive=3)
    drift_runs(store, [True, True, False])
    assert triggers.evaluate("support").verdict is TriggerVerdict.NOT_TRIGGERED
    drift_runs(store, [True, True, True], later=10)
    decision = triggers.evaluate("support")
    assert (decision.trigger, decision.verdict) == (Trigger.DRIFT, TriggerVerdict.TRIGGERED)
    assert "drifted in the last 3 evaluations" in decision.reason
    newest = store.query("SELECT max(id) FROM drift_runs")[0][0]
    assert decision.drift_run_id == newest
    assert (
        registry.get_sample_value(
            "driftloop_retrain_trigger_decisions_total",
            {"model": "support", "trigger": "drift", "decision": "triggered"},
        )
        == 1
    )


def test_quality_below_the_bar_trips_only_with_enough_judgments(store, tmp_path):
    triggers, _ = make(store, tmp_path, quality_bar=3.0, quality_min_samples=5)
    for i, score in enumerate([2.0, 2.0, 3.0, 2.0]):
        store.execute(
            "INSERT INTO judgments (request_id, source, model_alias, judge, content_hash, outcome,"
            " score, created_at) VALUES (?, 'traffic', 'support', 'rubric', ?, 'scored', ?, ?)",
            [f"r{i}", f"h{i}", score, NOW],
        )
    assert triggers.evaluate("support").verdict is TriggerVerdict.NOT_TRIGGERED  # 4 < 5 judgments
    store.execute(
        "INSERT INTO judgments (request_id, source, model_alias, judge, content_hash, outcome,"
        " score, created_at) VALUES ('r9', 'traffic', 'support', 'rubric', 'h9', 'scored', 1, ?)",
        [NOW],
    )
    decision = triggers.evaluate("support")
    assert decision.trigger is Trigger.QUALITY and decision.should_run
    assert "judge mean 2.00 over the last 5 judgments < bar 3.0" in decision.reason


def test_volume_counts_feedback_since_the_last_run(store, tmp_path):
    triggers, _ = make(store, tmp_path, volume_examples=2, cooldown_s=0)
    past_run(store, minutes_ago=30)
    for i, minutes in enumerate([60, 10, 5]):  # one before the last run, two after
        store.execute(
            "INSERT INTO feedback (id, received_at, model_alias, prompt, answer, request_id, actor)"
            " VALUES (?, ?, 'support', 'p', 'a', NULL, 'operator')",
            [f"f{i}", NOW - timedelta(minutes=minutes)],
        )
    decision = triggers.evaluate("support")
    assert decision.trigger is Trigger.VOLUME and "2 new feedback examples" in decision.reason


def test_cooldown_pause_and_data_floor_suppress_with_their_reason(store, tmp_path):
    drift_runs(store, [True, True, True])
    triggers, _ = make(store, tmp_path, cooldown_s=3600)
    past_run(store, minutes_ago=10)
    decision = triggers.evaluate("support")
    assert decision.verdict is TriggerVerdict.SUPPRESSED
    assert "cooldown: 3000 s left of 3600 s" in decision.reason
    set_paused(store, "support", True)
    assert "paused by an operator" in triggers.evaluate("support").reason
    set_paused(store, "support", False)
    few, _ = make(store, tmp_path, examples=3, cooldown_s=0, min_examples=20)
    assert "only 3 training examples, need 20" in few.evaluate("support").reason


def test_manual_skips_the_cooldown_but_not_the_pause(store, tmp_path):
    triggers, _ = make(store, tmp_path, cooldown_s=3600)
    past_run(store, minutes_ago=1)
    assert triggers.evaluate("support", manual_reason="customer complaint").should_run
    set_paused(store, "support", True)
    assert not triggers.evaluate("support", manual_reason="again").should_run


def test_dry_run_says_what_would_happen_and_every_decision_is_stored(store, tmp_path):
    drift_runs(store, [True, True, True])
    triggers, _ = make(store, tmp_path)
    decision = triggers.evaluate("support", dry_run=True)
    assert decision.verdict is TriggerVerdict.DRY_RUN
    assert decision.reason.startswith("would be triggered: ")
    triggers.evaluate("support")
    rows = store.query("SELECT trigger, decision FROM retrain_decisions ORDER BY id")
    assert rows == [("drift", "dry_run"), ("drift", "triggered")]


def test_the_run_lock_is_exclusive_and_dies_with_its_holder(tmp_path):
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            textwrap.dedent(
                f"""
                import sys, time
                from pathlib import Path
                from retrain.triggers import RunLock
                lock = RunLock(Path({str(tmp_path)!r}), "support")
                assert lock.acquire()
                print("held", flush=True)
                time.sleep(60)
                """
            ),
        ],
        stdout=subprocess.PIPE,
        text=True,
        cwd=os.getcwd(),
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        lock = RunLock(tmp_path, "support")
        assert lock.held_elsewhere() and not lock.acquire()
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=10)
        assert not lock.held_elsewhere()
        assert lock.acquire()
        lock.release()
    finally:
        holder.kill()
        holder.wait()


def test_the_data_floor_counts_what_a_dataset_would_start_from(store):
    from retrain.data.sources import count_examples, training_examples

    for i in range(2):
        store.execute(
            "INSERT INTO feedback (id, received_at, model_alias, prompt, answer, request_id, actor)"
            " VALUES (?, ?, 'support', 'p', 'a', NULL, 'operator')",
            [f"f{i}", NOW],
        )
    for i, score in enumerate([5.0, 4.0, 2.0]):  # two pass the 4.0 bar
        store.execute(
            "INSERT INTO requests (request_id, started_at, route, model_alias, stream,"
            " status_code, prompt_text, response_text) VALUES (?, ?, 'chat_completions',"
            " 'support', false, 200, 'q', 'r')",
            [f"r{i}", NOW],
        )
        store.execute(
            "INSERT INTO judgments (request_id, source, model_alias, judge, content_hash, outcome,"
            " score, created_at) VALUES (?, 'traffic', 'support', 'rubric', ?, 'scored', ?, ?)",
            [f"r{i}", f"h{i}", score, NOW],
        )
    examples = training_examples(store, "support", 4.0, limit=100)
    assert [e["source"] for e in examples] == ["feedback", "feedback", "judged", "judged"]
    assert count_examples(store, "support", 4.0) == len(examples) == 4
