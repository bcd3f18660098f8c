"""Known answers, edge cases and the registry of the histogram statistics."""

from __future__ import annotations

import inspect
import math

import numpy as np
import pytest
from scipy.stats import ks_2samp

from monitor.drift import statistics
from monitor.drift.statistics import (
    STATISTICS,
    BinScores,
    chi_square,
    distinct_n,
    g_test,
    get_statistic,
    js_divergence,
    ks_histogram,
    ks_statistic,
    psi,
    rate_difference,
    register_statistic,
    total_variation,
)


def test_every_statistic_is_registered_and_documented() -> None:
    returns_scores = {
        function
        for _, function in inspect.getmembers(statistics, inspect.isfunction)
        if inspect.signature(function).return_annotation in ("BinScores", BinScores)
    }
    assert returns_scores == set(STATISTICS.values())
    for name, function in STATISTICS.items():
        assert function.__doc__, f"statistic {name!r} has no docstring"
    assert set(STATISTICS) == {
        "psi",
        "js",
        "chi2",
        "g_test",
        "ks",
        "rate_difference",
        "total_variation",
    }


def test_registering_a_name_twice_fails() -> None:
    with pytest.raises(ValueError, match="already registered"):
        register_statistic("psi")(psi)


def test_unknown_statistic_lists_the_known_ones() -> None:
    with pytest.raises(ValueError, match=r"unknown statistic 'nope'.*psi"):
        get_statistic("nope")


def test_psi_known_answer() -> None:
    # +0.5 per bin: r = (50.5, 50.5)/101 = (0.5, 0.5), c = (25.5, 75.5)/101
    # PSI = (c1 - r1) ln(c1/r1) + (c2 - r2) ln(c2/r2)
    c1, c2 = 25.5 / 101, 75.5 / 101
    expected = (c1 - 0.5) * math.log(c1 / 0.5) + (c2 - 0.5) * math.log(c2 / 0.5)
    result = psi([50, 50], [25, 75])
    assert float(result.score) == pytest.approx(expected) == pytest.approx(0.268677, abs=1e-6)
    assert result.contributions.sum() == pytest.approx(float(result.score))


def test_psi_stays_finite_when_a_bin_is_empty() -> None:
    assert np.isfinite(psi([100, 0], [50, 50]).score)


def test_js_known_answers_in_bits() -> None:
    assert float(js_divergence([1, 0], [0, 1]).score) == pytest.approx(1.0)
    # r = (.5, .5), c = (1, 0), m = (.75, .25):
    # KL(r||m) = .5 log2(.5/.75) + .5 log2(.5/.25); KL(c||m) = log2(1/.75); JS = mean of the two
    expected = 0.5 * (0.5 * math.log2(0.5 / 0.75) + 0.5 * 1.0) + 0.5 * math.log2(1 / 0.75)
    assert float(js_divergence([1, 1], [1, 0]).score) == pytest.approx(expected)


def test_chi_square_and_g_known_answers() -> None:
    # ref (10, 20), cur (20, 10): every expected count is 15
    assert float(chi_square([10, 20], [20, 10]).score) == pytest.approx(4 * 25 / 15)
    expected_g = 2 * 2 * (10 * math.log(10 / 15) + 20 * math.log(20 / 15))
    assert float(g_test([10, 20], [20, 10]).score) == pytest.approx(expected_g)


def test_chi_square_ignores_bins_empty_in_both_windows() -> None:
    assert float(chi_square([10, 20, 0], [20, 10, 0]).score) == pytest.approx(4 * 25 / 15)


def test_ks_known_answer_and_agreement_with_scipy() -> None:
    assert float(ks_histogram([1, 1, 0], [0, 1, 1]).score) == pytest.approx(0.5)
    assert ks_statistic([1, 2], [2, 3]) == pytest.approx(0.5)
    rng = np.random.default_rng(0)
    ref, cur = rng.poisson(20, 300), rng.poisson(22, 250)
    assert ks_statistic(ref, cur) == pytest.approx(ks_2samp(ref, cur).statistic)


def test_rate_difference_and_total_variation() -> None:
    result = rate_difference([90, 10], [80, 20])
    assert float(result.score) == pytest.approx(0.1)
    np.testing.assert_allclose(result.contributions, [-0.1, 0.1])
    assert float(total_variation([1, 0], [0, 1]).score) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="2 bins"):
        rate_difference([1, 2, 3], [1, 2, 3])


@pytest.mark.parametrize("name", sorted(STATISTICS))
def test_identical_windows_score_zero(name: str) -> None:
    counts = [30, 50] if name == "rate_difference" else [30, 50, 20]
    assert float(STATISTICS[name](counts, counts).score) == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize("name", sorted(set(STATISTICS) - {"rate_difference"}))
def test_one_bin_scores_zero(name: str) -> None:
    assert float(STATISTICS[name]([7], [3]).score) == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize("name", sorted(STATISTICS))
def test_empty_window_raises(name: str) -> None:
    with pytest.raises(ValueError, match="current window is empty"):
        STATISTICS[name]([3, 4], [0, 0])


@pytest.mark.parametrize("name", sorted(STATISTICS))
def test_nan_counts_raise_naming_nan(name: str) -> None:
    with pytest.raises(ValueError, match="NaN in reference counts"):
        STATISTICS[name]([float("nan"), 4], [1, 2])


@pytest.mark.parametrize(
    ("reference", "current", "message"),
    [([1, 2], [1, 2, 3], "same"), ([-1, 2], [1, 2], "negative"), ([np.inf, 1], [1, 1], "infinite")],
)
def test_bad_histograms_raise(reference: list[float], current: list[float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        psi(reference, current)


@pytest.mark.parametrize("name", sorted(STATISTICS))
def test_batches_match_one_at_a_time(name: str) -> None:
    rng = np.random.default_rng(1)
    bins = 2 if name == "rate_difference" else 6
    ref, cur = rng.integers(1, 40, (5, bins)), rng.integers(1, 40, (5, bins))
    batch = STATISTICS[name](ref, cur)
    assert batch.score.shape == (5,)
    assert batch.contributions.shape == (5, bins)
    for row in range(5):
        single = STATISTICS[name](ref[row], cur[row])
        assert float(single.score) == pytest.approx(float(batch.score[row]))


def test_distinct_n() -> None:
    assert distinct_n(["a b a b"], n=2) == pytest.approx(2 / 3)
    assert distinct_n(["a b", "a b"], n=1) == pytest.approx(2 / 4)
    with pytest.raises(ValueError, match="no 2-grams"):
        distinct_n(["word"], n=2)
    with pytest.raises(ValueError, match="n must be"):
        distinct_n(["a b"], n=0)


def test_ks_statistic_rejects_nan_and_empty_samples() -> None:
    with pytest.raises(ValueError, match="NaN in current sample"):
        ks_statistic([1, 2], [1, float("nan")])
    with pytest.raises(ValueError, match="reference sample is empty"):
        ks_statistic([], [1])
