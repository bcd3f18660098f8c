"""The canary's checks on real DuckDB rows: quiet under no difference, loud on a real regression.

Rows are written as capture writes them (one per request, the served version in
``served_model``, conversations sharing a ``session_key``), then ``compare`` decides.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pyarrow as pa
import pytest

from driftloop.schema import MIGRATIONS
from monitor.store import Store
from retrain.serving.canary import CanarySettings, compare

ALIAS, CANDIDATE, PRODUCTION = "support", "support-v2", "support-v1"
START = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)
SETTINGS = CanarySettings(share=0.2, alpha=0.01, draws=500)


def write_side(
    store: Store,
    rng: np.random.Generator,
    served: str,
    sessions: int,
    *,
    refusal: float = 0.05,
    error: float = 0.02,
    latency_scale: float = 1.0,
) -> None:
    rows = []
    for s in range(sessions):
        for turn in range(int(rng.integers(1, 5))):  # conversations of 1-4 requests
            failed = rng.random() < error
            refused = rng.random() < refusal
            rows.append(
                [
                    f"{served}-{s}-{turn}",
                    START + timedelta(seconds=len(rows)),
                    "chat_completions",
                    ALIAS,
                    served,
                    False,
                    "I'm sorry, but I can't help with that." if refused else "Sure: do this.",
                    "length" if rng.random() < 0.03 else "stop",
                    502 if failed else 200,
                    float(latency_scale * rng.lognormal(-1.0, 0.4)),
                    "upstream_unreachable" if failed else None,
                    f"{served}-session-{s}",
                ]
            )
    names = [
        "request_id",
        "started_at",
        "route",
        "model_alias",
        "served_model",
        "stream",
        "response_text",
        "finish_reason",
        "status_code",
        "latency_s",
        "error",
        "session_key",
    ]
    batch = pa.Table.from_pylist([dict(zip(names, row, strict=True)) for row in rows])  # noqa: F841
    cursor = store.cursor()  # DuckDB scans the Arrow table by its name (executemany is slow)
    cursor.execute(f"INSERT INTO requests ({', '.join(names)}) SELECT * FROM batch")
    cursor.close()


@pytest.fixture
def store(tmp_path):
    opened = Store.open(tmp_path / "canary.duckdb", migrations=MIGRATIONS)
    yield opened
    opened.close()


def test_no_difference_rarely_fails_a_candidate(store):
    """Both sides from one distribution, 200 times: the family-wise alpha of 0.01 holds."""
    rng = np.random.default_rng(7)
    false_alarms = 0
    for _ in range(200):
        store.execute("DELETE FROM requests")
        write_side(store, rng, CANDIDATE, 80)
        write_side(store, rng, PRODUCTION, 240)
        comparison = compare(store, ALIAS, CANDIDATE, PRODUCTION, START, SETTINGS)
        assert {c.name for c in comparison.checks} == {
            "error_rate", "refusal_rate", "empty_rate", "truncation_rate", "latency_s"
        }  # fmt: skip
        false_alarms += bool(comparison.regressions)
    print(f"false alarms: {false_alarms}/200")
    assert false_alarms <= 5  # at most 2 expected at alpha 0.01; 6 or more has p < 0.02


@pytest.mark.parametrize(
    ("change", "flagged"),
    [
        ({"refusal": 0.30}, "refusal_rate"),
        ({"error": 0.15}, "error_rate"),
        ({"latency_scale": 1.6}, "latency_s"),
    ],
)
def test_a_worse_candidate_is_caught_on_the_check_that_moved(store, change, flagged):
    rng = np.random.default_rng(11)
    write_side(store, rng, CANDIDATE, 80, **change)
    write_side(store, rng, PRODUCTION, 240)
    comparison = compare(store, ALIAS, CANDIDATE, PRODUCTION, START, SETTINGS)
    print(comparison.summary())
    assert [c.name for c in comparison.regressions] == [flagged]
    check = comparison.regressions[0]
    assert check.p_value < comparison.alpha_each and check.candidate > check.production


def test_a_better_candidate_is_not_a_regression(store):
    rng = np.random.default_rng(12)
    write_side(store, rng, CANDIDATE, 80, refusal=0.0, error=0.0, latency_scale=0.5)
    write_side(store, rng, PRODUCTION, 240, refusal=0.2, error=0.1)
    assert compare(store, ALIAS, CANDIDATE, PRODUCTION, START, SETTINGS).regressions == []


def test_rows_before_the_canary_or_of_other_versions_do_not_count(store):
    rng = np.random.default_rng(13)
    write_side(store, rng, CANDIDATE, 30)
    write_side(store, rng, PRODUCTION, 30)
    write_side(store, rng, "support-v0", 30, refusal=1.0)
    later = compare(store, ALIAS, CANDIDATE, PRODUCTION, START + timedelta(days=1), SETTINGS)
    assert later.n_candidate == later.n_production == 0 and later.checks == []
    now = compare(store, ALIAS, CANDIDATE, PRODUCTION, START, SETTINGS)
    [(n_candidate,)] = store.query(
        "SELECT count(*) FROM requests WHERE served_model = ?", [CANDIDATE]
    )
    assert now.n_candidate == n_candidate
