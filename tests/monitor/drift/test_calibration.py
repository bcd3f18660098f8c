"""The hypergeometric permutation null: margins, validity and p-values."""

from __future__ import annotations

import numpy as np
import pytest

from monitor.drift.calibration import calibrate_histogram, p_value, permutation_tables


def test_null_tables_keep_both_margins() -> None:
    ref, cur = np.array([30, 5, 15]), np.array([10, 25, 15])
    null_ref, null_cur = permutation_tables(ref, cur, 500, np.random.default_rng(0))
    np.testing.assert_array_equal(null_ref + null_cur, np.tile(ref + cur, (500, 1)))
    np.testing.assert_array_equal(null_ref.sum(axis=1), np.full(500, ref.sum()))


def test_null_tables_match_shuffling_rows() -> None:
    ref, cur = np.array([30, 5, 15]), np.array([10, 25, 15])
    rng = np.random.default_rng(1)
    rows = np.repeat(np.arange(3), ref + cur)
    shuffled = np.array(
        [np.bincount(rng.permutation(rows)[: ref.sum()], minlength=3) for _ in range(4000)]
    )
    null_ref, _ = permutation_tables(ref, cur, 4000, rng)
    np.testing.assert_allclose(null_ref.mean(axis=0), shuffled.mean(axis=0), atol=0.3)
    np.testing.assert_allclose(null_ref.std(axis=0), shuffled.std(axis=0), rtol=0.1)


@pytest.mark.parametrize("statistic", ["psi", "js", "chi2"])
def test_false_alarm_rate_matches_alpha(statistic: str) -> None:
    rng = np.random.default_rng(2)
    shares = np.array([0.5, 0.2, 0.2, 0.1])
    hits = [
        calibrate_histogram(
            statistic, rng.multinomial(80, shares), rng.multinomial(60, shares), 0.1, 200, seed
        ).p_value
        < 0.1
        for seed in range(400)
    ]
    assert 0.05 <= np.mean(hits) <= 0.15


def test_identical_histograms_give_p_one_and_zero_effect() -> None:
    result = calibrate_histogram("psi", [40, 60], [40, 60], draws=300)
    assert result.score == pytest.approx(0.0)
    assert result.p_value == 1.0
    assert result.effect <= 0


def test_clear_drift_goes_past_the_permutation_floor() -> None:
    result = calibrate_histogram("js", [100, 0], [0, 100], draws=999)
    assert result.p_value < 1 / 1000  # the fitted tail, not the floor 1 / (draws + 1)
    assert result.p_method == "gpd_tail"
    assert result.score > result.threshold
    assert result.effect > 0.9


def test_p_value_counts_ties() -> None:
    assert p_value(1.0, np.array([0.0, 1.0, 2.0])) == pytest.approx(3 / 4)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"alpha": 1.5}, "alpha must be in"),
        ({"draws": 0}, "draws must be >= 1"),
        ({"reference": [1.5, 2]}, "integer counts"),
        ({"statistic": "nope"}, "unknown statistic"),
    ],
)
def test_bad_arguments_raise(kwargs: dict[str, object], message: str) -> None:
    arguments: dict[str, object] = {"statistic": "psi", "reference": [3, 4], "current": [4, 3]}
    arguments.update(kwargs)
    with pytest.raises(ValueError, match=message):
        calibrate_histogram(**arguments)  # type: ignore[arg-type]
