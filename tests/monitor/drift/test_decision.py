"""One decision from many signals: Cauchy combination and Holm, and their error rates."""

from __future__ import annotations

import numpy as np
import pytest

from monitor.drift.decision import cauchy_combination, holm


def test_holm_matches_the_step_down_by_hand():
    # sorted 0.01, 0.02, 0.03, 0.5 -> 4*0.01, 3*0.02, max(0.06, 2*0.03), max(.., 0.5)
    assert holm([0.03, 0.01, 0.5, 0.02]).tolist() == pytest.approx([0.06, 0.04, 0.5, 0.06])
    assert holm([]).tolist() == []
    assert holm([0.9, 0.9]).tolist() == [1.0, 1.0]


def test_holm_controls_the_family_wise_rate_on_independent_nulls():
    rng = np.random.default_rng(0)
    p = rng.uniform(size=(20000, 9))
    any_alarm = (np.array([holm(row) for row in p[:5000]]).min(axis=1) < 0.01).mean()
    assert any_alarm <= 0.013  # nominal 0.01 (raw p < 0.01 on any of 9: ~0.086)


def test_cauchy_keeps_the_strongest_test_and_holds_its_level():
    assert cauchy_combination([1e-6, 0.8, 0.9]) < 1e-5
    assert cauchy_combination([0.5]) == pytest.approx(0.5)
    assert cauchy_combination([1e-300, 0.5]) > 0
    from scipy.special import ndtr

    rng = np.random.default_rng(1)
    # strongly dependent nulls: three tests whose z-scores correlate at 0.9
    shared = rng.normal(size=(20000, 1))
    z = 0.9 * shared + np.sqrt(1 - 0.81) * rng.normal(size=(20000, 3))
    combined = np.array([cauchy_combination(row) for row in ndtr(-z)])
    assert np.mean(combined < 0.01) <= 0.013  # nominal 0.01


def test_cauchy_rejects_bad_input():
    with pytest.raises(ValueError, match="non-empty"):
        cauchy_combination([])
    with pytest.raises(ValueError, match=r"\(0, 1\]"):
        cauchy_combination([0.0, 0.5])
