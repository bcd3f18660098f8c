"""Session-aware nulls: correlated rows within a conversation must not look like drift."""

from __future__ import annotations

import numpy as np
import pytest

from monitor.drift import embedding_drift, length_drift, mean_shift_test, rate_drift
from monitor.drift.calibration import calibrate_histogram, permutation_tables
from monitor.drift.sessions import (
    count_design_effect,
    design_effect,
    session_codes,
    session_counts,
    unit_sums,
)


def sessions_window(rng: np.random.Generator, rows: int, dim: int = 16):
    """Rows in sessions of 1-7 turns; a session's turns sit close to its own centre."""
    vectors, codes, session = [], [], 0
    while len(vectors) < rows:
        centre = rng.normal(size=dim)
        for _ in range(int(rng.integers(1, 8))):
            vectors.append(centre + 0.3 * rng.normal(size=dim))
            codes.append(session)
        session += 1
    matrix = np.array(vectors[:rows], dtype=np.float32)
    return matrix / np.linalg.norm(matrix, axis=1, keepdims=True), np.array(codes[:rows])


def test_session_codes_number_sessions_in_order_and_none_is_its_own():
    assert session_codes(["x", "y", "x", None, None]).tolist() == [0, 1, 0, 2, 3]
    assert session_codes(None, rows=3).tolist() == [0, 1, 2]
    with pytest.raises(ValueError, match="3 rows"):
        session_codes(["a"], rows=3)


def test_unit_sums_and_design_effect():
    values = np.array([[1.0], [1.0], [-1.0], [-1.0]])
    assert unit_sums(values, np.array([0, 0, 1, 1])).ravel().tolist() == [2.0, -2.0]
    assert design_effect(values, np.array([0, 0, 1, 1])) == pytest.approx(2.0)  # identical pairs
    assert design_effect(values, np.array([0, 1, 2, 3])) == 1.0
    assert design_effect(values, np.array([0, 1, 0, 1])) == 1.0  # anti-correlated: floor at 1


def test_count_design_effect_of_identical_sessions_is_their_size():
    # 4 sessions of 3 identical rows each, two bins
    counts = session_counts(
        [0, 0, 0, 1, 1, 1], [0, 0, 0, 1, 1, 1], [0, 0, 0, 1, 1, 1], [0] * 3 + [1] * 3, 2
    )
    assert count_design_effect(counts, [6, 6]) == pytest.approx(3.0)


def test_session_tables_move_whole_sessions():
    # the reference holds one 5-row session in bin 0, the current one in bin 1, plus singles
    ref_bins, cur_bins = [0] * 5 + [1, 1], [1] * 5 + [0, 0]
    counts = session_counts(ref_bins, cur_bins, [0] * 5 + [1, 2], [0] * 5 + [1, 2], 2)
    null_ref, null_cur = permutation_tables([5, 2], [2, 5], 2000, np.random.default_rng(0), counts)
    # windows of rows: the reference keeps its 7 rows in every draw, the current its 7
    assert (null_ref.sum(axis=1) == 7).all() and (null_cur.sum(axis=1) == 7).all()
    # the 5-row sessions move as blocks: the bin-0 session is whole in the reference (>= 5 rows
    # of bin 0 there), whole in the current (<= 2 there: only singles), or split by the cut
    bin0 = null_ref[:, 0]
    assert (bin0 >= 5).any() and (bin0 <= 2).any()
    assert abs(bin0.mean() - 3.5) < 0.15  # by symmetry, half of bin 0's 7 rows on average


def test_row_level_nulls_alarm_on_sessions_and_session_nulls_do_not():
    rng = np.random.default_rng(3)
    row_alarms = session_alarms = 0
    pairs = 20
    for i in range(pairs):
        ref, ref_codes = sessions_window(rng, 300)
        cur, cur_codes = sessions_window(rng, 300)
        row_alarms += mean_shift_test(ref, cur, seed=i).p_value < 0.01
        session_alarms += (
            mean_shift_test(ref, cur, seed=i, sessions=(ref_codes, cur_codes)).p_value < 0.01
        )
    assert row_alarms >= pairs // 2  # measured: 20 of 20
    assert session_alarms <= 2  # measured: 0 of 20


def test_session_histogram_null_holds_for_clusters_lengths_and_rates():
    rng = np.random.default_rng(5)
    alarms = {"psi": 0, "ks": 0, "rate": 0}
    for i in range(20):
        ref, ref_codes = sessions_window(rng, 300)
        cur, cur_codes = sessions_window(rng, 300)
        sessions = (ref_codes, cur_codes)
        drift = embedding_drift("p", ref, cur, seed=i, sessions=sessions)
        alarms["psi"] += drift.histograms[0].p_value < 0.01
        lengths = (np.round(ref[:, 0] * 50), np.round(cur[:, 0] * 50))
        alarms["ks"] += length_drift("l", *lengths, seed=i, sessions=sessions).p_value < 0.01
        flags = (ref[:, 1] > 0.2, cur[:, 1] > 0.2)
        alarms["rate"] += rate_drift("r", *flags, seed=i, sessions=sessions).p_value < 0.01
    assert max(alarms.values()) <= 2, alarms


def test_sessions_still_find_a_real_shift_and_state_effective_n():
    rng = np.random.default_rng(11)
    ref, ref_codes = sessions_window(rng, 400)
    cur, cur_codes = sessions_window(rng, 400)
    cur[:100] = cur[:100] + 1.5  # a quarter of the current window moves to a new region
    cur /= np.linalg.norm(cur, axis=1, keepdims=True)
    drift = embedding_drift("p", ref, cur, seed=0, sessions=(ref_codes, cur_codes))
    assert drift.combined.drifted, drift.combined.reason
    assert drift.shift.n_effective_ref is not None and drift.shift.n_effective_ref < 400 / 1.5
    assert drift.combined.p_method == "cauchy"


def test_one_row_sessions_equal_the_row_level_test():
    rng = np.random.default_rng(0)
    ref, cur = rng.normal(size=(200, 8)), rng.normal(size=(200, 8))
    plain = mean_shift_test(ref, cur, seed=1)
    keyed = mean_shift_test(ref, cur, seed=1, sessions=(np.arange(200), np.arange(200)))
    assert keyed.p_value == plain.p_value and keyed.design_effect == 1.0
    hist = calibrate_histogram("psi", [30, 70], [45, 55], seed=2)
    assert hist.design_effect == 1.0


def test_mean_shift_needs_two_sessions_per_window():
    rng = np.random.default_rng(0)
    ref, cur = rng.normal(size=(50, 4)), rng.normal(size=(50, 4))
    with pytest.raises(ValueError, match="2 sessions"):
        mean_shift_test(ref, cur, sessions=(np.zeros(50, int), np.arange(50)))
