"""The drift job on a real DuckDB file: sessions from captured chats, one combined decision.

Requests go through the real capture path (``CaptureWriter``), so their session keys come from
the chat histories; vectors are written to the ``embeddings`` table as the embedding job would
(synthetic, so the windows' structure is known: each conversation's turns sit near its centre).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import numpy as np
import pyarrow as pa
import pytest
from prometheus_client import CollectorRegistry

from monitor.capture import CapturedExchange
from monitor.drift_job import COMBINED_SIGNAL, FAMILY, DriftJob, DriftSettings
from monitor.drift_report import latest_runs
from monitor.metrics import DriftMetrics, SidecarMetrics
from monitor.store import Store
from monitor.writer import CaptureWriter

T0 = datetime(2026, 11, 1, tzinfo=UTC)
WINDOW = 300
MODEL = "test-embedder"


def conversations(rng: np.random.Generator, rows: int, offset: int, shift: float = 0.0):
    """(turn texts, vectors) of conversations of 1-7 turns, each turn close to its own centre."""
    out = []
    number = 0
    while sum(len(c[0]) for c in out) < rows:
        centre = rng.normal(size=16) + (3.0 if rng.random() < shift else 0.0)
        turns = int(rng.integers(1, 8))
        texts = [f"conversation {offset + number} turn {t}" for t in range(turns)]
        vectors = centre + 0.3 * rng.normal(size=(turns, 16))
        out.append((texts, vectors / np.linalg.norm(vectors, axis=1, keepdims=True)))
        number += 1
    return out


def capture(store: Store, windows: list[list[tuple[list[str], np.ndarray]]]) -> None:
    """Send every turn as a chat with its history through the capture writer; store vectors."""
    writer = CaptureWriter(store, SidecarMetrics(CollectorRegistry()))
    writer.start()
    ids, vectors, minute = [], [], 0
    for window in windows:
        for texts, vecs in window:
            history: list[dict[str, str]] = []
            for text, vector in zip(texts, vecs, strict=True):
                history.append({"role": "user", "content": text})
                request_id = f"r{minute:05d}"
                body = {
                    "choices": [{"message": {"content": "ok"}, "finish_reason": "stop"}],
                    "usage": {"prompt_tokens": 5 + len(history), "completion_tokens": 1},
                }
                writer.submit(
                    CapturedExchange(
                        request_id=request_id,
                        started_at=(T0 + timedelta(seconds=minute)).timestamp(),
                        route="chat_completions",
                        model_alias="m",
                        served_model="m",
                        stream=False,
                        request_body=json.dumps({"model": "m", "messages": history}).encode(),
                        status_code=200,
                        response_body=json.dumps(body).encode(),
                    )
                )
                history.append({"role": "assistant", "content": "ok"})
                ids.append(request_id)
                vectors.append(vector.astype(np.float32).tolist())
                minute += 1
    writer.close()
    store.append(
        "embeddings",
        pa.table(
            {
                "request_id": ids,
                "field": ["prompt"] * len(ids),
                "model": [MODEL] * len(ids),
                "vector": pa.array(vectors, pa.list_(pa.float32())),
            }
        ),
    )


def first_rows(window, rows):
    """Cut a list of conversations to exactly ``rows`` turns (the last one truncated)."""
    out, count = [], 0
    for texts, vecs in window:
        take = min(len(texts), rows - count)
        out.append((texts[:take], vecs[:take]))
        count += take
        if count == rows:
            return out
    raise AssertionError("not enough turns")


@pytest.fixture
def steady_store(tmp_path):
    rng = np.random.default_rng(4)
    store = Store.open(tmp_path / "d.duckdb")
    reference = first_rows(conversations(rng, WINDOW, 0), WINDOW)
    current = first_rows(conversations(rng, WINDOW, 10_000), WINDOW)
    capture(store, [reference, current])
    yield store
    store.close()


def run(store: Store, sessions: bool):
    registry = CollectorRegistry()
    settings = DriftSettings(
        reference_size=WINDOW, window_size=WINDOW, embedding_model=MODEL, sessions=sessions
    )
    results = DriftJob(store, DriftMetrics(registry), settings, aliases=lambda: ["m"]).run()["m"]
    return {r.signal: r for r in results}, registry


def test_sessions_keep_a_steady_alias_clear_where_rows_alone_alarm(steady_store):
    keys = steady_store.query("SELECT count(DISTINCT session_key), count(*) FROM requests")
    assert keys[0][0] < keys[0][1] / 2  # the capture path grouped the turns into conversations

    rows_only, _ = run(steady_store, sessions=False)
    assert rows_only["prompt_embedding_mean_shift"].p_value < 1e-3  # neighbours look like drift
    assert rows_only[COMBINED_SIGNAL].drifted

    by_signal, registry = run(steady_store, sessions=True)
    decision = by_signal[COMBINED_SIGNAL]
    assert not decision.drifted, decision.reason
    assert decision.details["family"] == [s for s in FAMILY if by_signal[s].p_value is not None]
    embedding = by_signal["prompt_embedding"]
    assert embedding.p_method == "cauchy" and embedding.adjusted_p_value >= embedding.p_value
    assert embedding.n_effective_ref < WINDOW / 1.5  # about 4 correlated turns per conversation
    assert decision.min_detectable_shift is not None and 0 < decision.min_detectable_shift <= 1
    assert registry.get_sample_value(
        "driftloop_drift_min_detectable_shift_ratio", {"signal": "combined", "model": "m"}
    ) == pytest.approx(decision.min_detectable_shift)
    assert registry.get_sample_value(
        "driftloop_drift_effective_samples",
        {"signal": "combined", "model": "m", "window": "current"},
    ) == pytest.approx(decision.n_effective_cur)

    latest = {r["signal"]: r for r in latest_runs(steady_store) if r["run_at"]}
    stored = latest[COMBINED_SIGNAL]
    assert stored["n_effective_reference"] == pytest.approx(decision.n_effective_ref)
    assert stored["min_detectable_shift"] == pytest.approx(decision.min_detectable_shift)
    assert stored["p_method"] == "holm" and stored["drifted"] is False


def test_a_shift_of_whole_conversations_trips_the_combined_decision(tmp_path):
    rng = np.random.default_rng(8)
    store = Store.open(tmp_path / "d.duckdb")
    reference = first_rows(conversations(rng, WINDOW, 0), WINDOW)
    current = first_rows(conversations(rng, WINDOW, 10_000, shift=0.5), WINDOW)
    capture(store, [reference, current])
    by_signal, _ = run(store, sessions=True)
    store.close()
    decision = by_signal[COMBINED_SIGNAL]
    assert decision.drifted, decision.reason
    assert "prompt_embedding" in decision.details["tripped"]


def test_a_window_that_is_one_conversation_is_not_evaluated_and_the_run_goes_on(tmp_path):
    rng = np.random.default_rng(9)
    store = Store.open(tmp_path / "d.duckdb")
    reference = first_rows(conversations(rng, WINDOW, 0), WINDOW)
    centre = rng.normal(size=16)
    vectors = centre + 0.3 * rng.normal(size=(WINDOW, 16))
    one_chat = [([f"long chat turn {t}" for t in range(WINDOW)], vectors)]
    capture(store, [reference, one_chat])
    by_signal, registry = run(store, sessions=True)
    store.close()
    for signal in ("prompt_embedding", "prompt_embedding_mean_shift", "prompt_tokens_psi"):
        assert by_signal[signal].p_value is None
        assert "current window is 1 session" in by_signal[signal].reason
    assert not by_signal[COMBINED_SIGNAL].drifted
    assert by_signal[COMBINED_SIGNAL].reason.startswith("not evaluated")
    assert (
        registry.get_sample_value(
            "driftloop_drift_runs_total", {"model": "m", "outcome": "insufficient"}
        )
        == 1
    )
