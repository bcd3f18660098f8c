"""The mean-shift test: calibration, power on a clear shift, contributions and bad input."""

from __future__ import annotations

import numpy as np
import pytest

from monitor.drift.mean_shift import mean_shift_test


def gaussian(rng: np.random.Generator, rows: int, dim: int = 24) -> np.ndarray:
    """Anisotropic Gaussian rows (a few strong directions, like sentence embeddings)."""
    scales = np.linspace(2.0, 0.2, dim)
    return (rng.normal(size=(rows, dim)) * scales).astype(np.float32)


@pytest.mark.parametrize(("rows", "components"), [(60, 0), (60, 8), (400, 8)])
def test_false_alarm_rate_matches_alpha(rows: int, components: int) -> None:
    rng = np.random.default_rng(rows + components)
    p_values = [
        mean_shift_test(
            gaussian(rng, rows), gaussian(rng, rows), draws=1000, seed=s, components=components
        ).p_value
        for s in range(300)
    ]
    assert 0.05 <= np.mean(np.array(p_values) < 0.1) <= 0.15


def test_a_clear_shift_is_found_and_its_size_estimated() -> None:
    rng = np.random.default_rng(0)
    ref, cur = gaussian(rng, 2000), gaussian(rng, 2000)
    cur[:, 5] += 0.3
    result = mean_shift_test(ref, cur)
    assert result.p_value < 0.001
    assert result.score > result.threshold
    assert result.effect == pytest.approx(0.3, abs=0.08)


def test_a_spread_change_needs_the_second_moments() -> None:
    rng = np.random.default_rng(1)
    ref, cur = gaussian(rng, 1500), gaussian(rng, 1500)
    cur[:, 0] *= 1.3
    assert mean_shift_test(ref, cur, components=0).p_value > 0.01
    assert mean_shift_test(ref, cur, components=4).p_value < 0.01


def test_cluster_contributions_add_up_to_the_squared_mean_distance() -> None:
    rng = np.random.default_rng(2)
    ref, cur = gaussian(rng, 300), gaussian(rng, 200)
    cur[:50, 3] += 4.0
    labels = (rng.integers(0, 5, 300), np.r_[np.full(50, 4), rng.integers(0, 4, 150)])
    result = mean_shift_test(ref, cur, labels=labels)
    distance = cur.mean(axis=0, dtype=np.float64) - ref.mean(axis=0, dtype=np.float64)
    assert sum(result.contributions) == pytest.approx(float(distance @ distance), rel=1e-4)
    assert int(np.argmax(result.contributions)) == 4


def test_same_seed_same_answer() -> None:
    rng = np.random.default_rng(3)
    ref, cur = gaussian(rng, 100), gaussian(rng, 100)
    assert mean_shift_test(ref, cur, seed=7) == mean_shift_test(ref, cur, seed=7)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"reference": np.full((5, 3), np.nan)}, "NaN in reference embeddings"),
        ({"current": np.zeros((5, 4))}, "dim 4, expected 3"),
        ({"reference": np.zeros((1, 3)), "current": np.zeros((1, 3))}, "at least 3 rows"),
        ({"alpha": 0.0}, "alpha must be in"),
        ({"draws": 0}, "draws must be >= 1"),
        ({"quadratic_weight": -1.0}, "quadratic_weight must be >= 0"),
        ({"labels": (np.zeros(2), np.zeros(5))}, "one cluster per reference"),
    ],
)
def test_bad_input_raises(kwargs: dict[str, object], message: str) -> None:
    arguments: dict[str, object] = {"reference": np.zeros((5, 3)), "current": np.ones((5, 3))}
    arguments.update(kwargs)
    with pytest.raises(ValueError, match=message):
        mean_shift_test(**arguments)  # type: ignore[arg-type]
