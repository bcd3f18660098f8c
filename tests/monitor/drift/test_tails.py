"""Tail p-values past the permutation floor, and the minimum detectable shift."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import chi2

from monitor.drift import mean_shift_test
from monitor.drift.power import min_detectable_shift, shift_power
from monitor.drift.tails import chi2_quantile, chi2_tail, gpd_tail, tail_p_value


def test_chi2_tail_is_exact_for_a_chi_square():
    for x in (10.0, 30.0, 60.0):
        assert chi2_tail(x, (5.0, 10.0, 40.0)) == pytest.approx(chi2.sf(x, 5), rel=1e-9)
    assert chi2_quantile(0.001, (5.0, 10.0, 40.0)) == pytest.approx(chi2.isf(0.001, 5))


def test_gpd_tail_ranks_strong_scores_and_stays_conservative():
    null = np.random.default_rng(0).chisquare(5, size=2000)
    p = [gpd_tail(x, null) for x in (20.0, 30.0, 40.0)]
    assert p[0] > p[1] > p[2] > 0  # strong drifts rank
    for x, estimate in zip((20.0, 30.0, 40.0), p, strict=True):
        assert estimate >= chi2.sf(x, 5)  # the exponential cap errs on the safe side


def test_tail_p_value_uses_draws_while_they_suffice():
    null = np.random.default_rng(1).normal(size=2000)
    assert tail_p_value(0.0, null)[1] == "permutation"
    p, method = tail_p_value(8.0, null)
    assert method == "gpd_tail" and p < 1 / 2001


def test_a_score_that_draws_reach_keeps_its_monte_carlo_p_value():
    # The tail model only goes past the last draw: below that the decision stays the exact
    # Monte Carlo one at every alpha (the tail fit's noise must not add false alarms).
    null = np.random.default_rng(1).normal(size=2000)
    for reached_by in (1, 5, 9):
        observed = float(np.sort(null)[-reached_by])
        assert tail_p_value(observed, null) == ((1 + reached_by) / 2001, "permutation")


def test_mean_shift_p_values_go_past_the_floor_in_order():
    rng = np.random.default_rng(0)
    ref = rng.normal(size=(400, 8))
    strong = mean_shift_test(ref, rng.normal(0.4, 1, size=(400, 8)), draws=500)
    stronger = mean_shift_test(ref, rng.normal(0.8, 1, size=(400, 8)), draws=500)
    assert strong.p_method == stronger.p_method == "chi2_tail"
    assert stronger.p_value < strong.p_value < 1 / 501


def test_min_detectable_shift_falls_with_window_size():
    rng = np.random.default_rng(2)
    mdes = []
    for n in (200, 2000):
        ref, cur = rng.normal(size=(n, 8)), rng.normal(size=(n, 8))
        labels = ((ref[:, 0] > 0).astype(int), (cur[:, 0] > 0).astype(int))
        mdes.append(mean_shift_test(ref, cur, labels=labels, components=0).min_detectable_shift)
    assert mdes[0] is not None and mdes[1] is not None and mdes[1] < mdes[0] / 2  # ~1/sqrt(10)


def test_min_detectable_shift_power_is_what_it_says():
    weights = np.full(20, 1e-3)
    projections = np.zeros(20)
    projections[0] = 0.4
    share = min_detectable_shift(weights, projections, 1.0, threshold=0.05)
    assert share is not None
    assert shift_power(share, weights, projections, 1.0, 0.05) == pytest.approx(0.9, abs=1e-6)
    assert min_detectable_shift(weights, projections * 0, 1.0, threshold=0.05) is None
