"""Signals end to end: decisions, gates, explanations, and a light import."""

from __future__ import annotations

import dataclasses
import subprocess
import sys

import numpy as np
import pytest

from monitor.drift import (
    EMBEDDING_POLICY,
    DriftPolicy,
    embedding_drift,
    histogram_drift,
    length_drift,
    rate_drift,
)


def topics(rng: np.random.Generator, counts: list[int], dim: int = 16) -> np.ndarray:
    """Unit-norm rows around one direction per topic (counts[t] rows of topic t)."""
    rows = [np.eye(dim)[t] * 3 + rng.normal(scale=0.5, size=(c, dim)) for t, c in enumerate(counts)]
    matrix = np.concatenate(rows)
    return (matrix / np.linalg.norm(matrix, axis=1, keepdims=True)).astype(np.float32)


def test_a_new_topic_drifts_and_its_cluster_is_named() -> None:
    rng = np.random.default_rng(0)
    reference = topics(rng, [300, 300, 300, 0])
    current = topics(rng, [250, 250, 250, 150])
    result = embedding_drift("prompts", reference, current, k=4)
    assert result.shift.drifted
    assert result.shift.statistic == "mean_shift"
    assert (result.shift.n_ref, result.shift.n_cur) == (900, 900)
    new = int(np.bincount(result.clusters.current_labels[750:]).argmax())
    assert result.top_clusters(1) == [new]
    assert {r.statistic for r in result.histograms} == {"psi", "js"}
    assert all(r.drifted for r in result.histograms)


def test_no_drift_stays_quiet() -> None:
    rng = np.random.default_rng(1)
    result = embedding_drift("prompts", topics(rng, [200, 200]), topics(rng, [200, 200]))
    assert not result.shift.drifted
    assert result.shift.p_value > 0.01


def test_min_samples_and_min_effect_gate_a_significant_change() -> None:
    rng = np.random.default_rng(2)
    reference, current = topics(rng, [60, 0]), topics(rng, [30, 30])
    assert embedding_drift("p", reference, current).shift.p_value < 0.01
    assert not embedding_drift("p", reference, current).shift.drifted  # 60 < min_samples 100
    lenient = DriftPolicy(min_samples=50)
    assert embedding_drift("p", reference, current, policy=lenient).shift.drifted
    strict = DriftPolicy(min_samples=50, min_effect=5.0)
    assert not embedding_drift("p", reference, current, policy=strict).shift.drifted


def test_rate_drift() -> None:
    reference = np.r_[np.ones(20, bool), np.zeros(980, bool)]
    current = np.r_[np.ones(80, bool), np.zeros(920, bool)]
    result = rate_drift("refusal_rate", reference, current)
    assert result.drifted and result.score == pytest.approx(0.06)
    assert not rate_drift("refusal_rate", reference, reference).drifted
    with pytest.raises(ValueError, match="flags must be booleans"):
        rate_drift("refusal_rate", [0, 1], [1, 1])


@pytest.mark.parametrize("statistic", ["ks", "psi", "js"])
def test_length_drift(statistic: str) -> None:
    rng = np.random.default_rng(3)
    reference, same = rng.poisson(30, 800), rng.poisson(30, 800)
    longer = np.r_[rng.poisson(30, 600), rng.poisson(90, 200)]
    assert length_drift("prompt_tokens", reference, longer, statistic=statistic).drifted
    assert not length_drift("prompt_tokens", reference, same, statistic=statistic).drifted


def test_histogram_drift_reports_per_bin_contributions() -> None:
    result = histogram_drift("custom", "chi2", [100, 100, 100], [100, 100, 200], EMBEDDING_POLICY)
    assert len(result.contributions) == 3
    assert max(range(3), key=lambda j: result.contributions[j]) == 2


def test_results_are_frozen() -> None:
    result = rate_drift("empty_rate", np.zeros(200, bool), np.zeros(200, bool))
    with pytest.raises(dataclasses.FrozenInstanceError):
        result.drifted = True  # type: ignore[misc]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"alpha": 0}, "alpha must be in"),
        ({"min_effect": -1}, "min_effect must be >= 0"),
        ({"min_samples": 0}, "min_samples must be >= 1"),
    ],
)
def test_policy_rejects_bad_settings(kwargs: dict[str, float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        DriftPolicy(**kwargs)  # type: ignore[arg-type]


def test_import_stays_light() -> None:
    heavy = ["sklearn", "scipy", "torch", "sentence_transformers", "evidently", "pandas"]
    code = f"import sys, monitor.drift; print([m for m in {heavy!r} if m in sys.modules])"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
