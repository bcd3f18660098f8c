"""Two-window statistics over count histograms, registered by name and vectorised over batches.

Every statistic takes a reference and a current histogram of counts with the same bins, shaped
``(..., k)``, and returns a :class:`BinScores`: the score (shape ``(...)``) and per-bin terms
(shape ``(...k)``) that say *which* bins moved. Leading axes let calibration score thousands of
null tables in one call.

Edge cases, the same for all: a window with no counts (an empty window) raises ``ValueError``; so
do NaN, infinite or negative counts and mismatched shapes. One bin (``k = 1``) scores 0, as do
identical histograms.

>>> psi([50, 50], [50, 50]).score
np.float64(0.0)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray

# Jeffreys prior: half a count per bin keeps PSI finite when a bin is empty in one window.
PSI_PSEUDOCOUNT = 0.5


@dataclass(frozen=True)
class BinScores:
    """A statistic's score and its per-bin terms (summing to the score for additive statistics)."""

    score: NDArray[np.float64]
    contributions: NDArray[np.float64]


HistogramStatistic = Callable[[ArrayLike, ArrayLike], BinScores]
STATISTICS: dict[str, HistogramStatistic] = {}


def register_statistic(name: str) -> Callable[[HistogramStatistic], HistogramStatistic]:
    """Add a histogram statistic to ``STATISTICS`` under ``name`` (once) so configs can name it."""

    def add(function: HistogramStatistic) -> HistogramStatistic:
        if name in STATISTICS:
            raise ValueError(f"statistic {name!r} is already registered")
        STATISTICS[name] = function
        return function

    return add


def get_statistic(name: str) -> HistogramStatistic:
    """The registered statistic called ``name``; the error lists the known names."""
    try:
        return STATISTICS[name]
    except KeyError:
        raise ValueError(f"unknown statistic {name!r}; known: {sorted(STATISTICS)}") from None


def check_counts(
    reference: ArrayLike, current: ArrayLike
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Validate two count histograms (same shape, finite, non-negative, non-empty) as floats."""
    ref = np.asarray(reference, dtype=np.float64)
    cur = np.asarray(current, dtype=np.float64)
    if ref.ndim == 0 or ref.shape != cur.shape:
        raise ValueError(
            f"histograms need the same (..., k) shape, got {ref.shape} and {cur.shape}"
        )
    if ref.shape[-1] == 0:
        raise ValueError("histograms need at least one bin")
    for name, counts in (("reference", ref), ("current", cur)):
        if np.isnan(counts).any():
            raise ValueError(f"NaN in {name} counts")
        if not np.isfinite(counts).all():
            raise ValueError(f"infinite value in {name} counts")
        if (counts < 0).any():
            raise ValueError(f"negative value in {name} counts")
        if (counts.sum(axis=-1) == 0).any():
            raise ValueError(f"the {name} window is empty (all counts are 0)")
    return ref, cur


def shares(counts: NDArray[np.float64]) -> NDArray[np.float64]:
    """Counts as proportions of their window."""
    return counts / counts.sum(axis=-1, keepdims=True)


def xlogx_ratio(x: NDArray[np.float64], y: NDArray[np.float64]) -> NDArray[np.float64]:
    """``x * ln(x / y)`` with the convention ``0 * ln 0 = 0`` (y > 0 wherever x > 0)."""
    positive = x > 0
    ratio = np.divide(x, y, out=np.ones_like(x), where=positive)
    return np.where(positive, x * np.log(ratio), 0.0)


@register_statistic("psi")
def psi(reference: ArrayLike, current: ArrayLike) -> BinScores:
    """Population stability index Σ (c − r)·ln(c / r) over shares, +0.5 count per bin for empty bins."""
    ref, cur = check_counts(reference, current)
    r = shares(ref + PSI_PSEUDOCOUNT)
    c = shares(cur + PSI_PSEUDOCOUNT)
    terms = (c - r) * np.log(c / r)
    return BinScores(terms.sum(axis=-1), terms)


@register_statistic("js")
def js_divergence(reference: ArrayLike, current: ArrayLike) -> BinScores:
    """Jensen–Shannon divergence of the two share vectors in bits (0 ≤ JS ≤ 1), no smoothing needed."""
    ref, cur = check_counts(reference, current)
    r, c = shares(ref), shares(cur)
    mid = (r + c) / 2
    terms = (xlogx_ratio(r, mid) + xlogx_ratio(c, mid)) / (2 * np.log(2))
    return BinScores(terms.sum(axis=-1), terms)


def expected_counts(
    ref: NDArray[np.float64], cur: NDArray[np.float64]
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Counts each window would hold per bin if both came from one distribution (homogeneity)."""
    n_ref = ref.sum(axis=-1, keepdims=True)
    n_cur = cur.sum(axis=-1, keepdims=True)
    pooled = (ref + cur) / (n_ref + n_cur)
    return pooled * n_ref, pooled * n_cur


@register_statistic("chi2")
def chi_square(reference: ArrayLike, current: ArrayLike) -> BinScores:
    """Pearson's chi-square of homogeneity for the 2×k table; bins empty in both windows add 0."""
    ref, cur = check_counts(reference, current)
    exp_ref, exp_cur = expected_counts(ref, cur)
    occupied = exp_ref > 0
    safe_ref = np.where(occupied, exp_ref, 1.0)
    safe_cur = np.where(occupied, exp_cur, 1.0)
    terms = np.where(
        occupied, (ref - exp_ref) ** 2 / safe_ref + (cur - exp_cur) ** 2 / safe_cur, 0.0
    )
    return BinScores(terms.sum(axis=-1), terms)


@register_statistic("g_test")
def g_test(reference: ArrayLike, current: ArrayLike) -> BinScores:
    """G-statistic 2·Σ O·ln(O/E) of the 2×k table (2·N times the window/bin mutual information)."""
    ref, cur = check_counts(reference, current)
    exp_ref, exp_cur = expected_counts(ref, cur)
    terms = 2 * (xlogx_ratio(ref, exp_ref) + xlogx_ratio(cur, exp_cur))
    return BinScores(terms.sum(axis=-1), terms)


@register_statistic("ks")
def ks_histogram(reference: ArrayLike, current: ArrayLike) -> BinScores:
    """Kolmogorov–Smirnov max |F_cur − F_ref| over *ordered* bins; terms are the signed CDF gaps."""
    ref, cur = check_counts(reference, current)
    gaps = np.cumsum(shares(cur), axis=-1) - np.cumsum(shares(ref), axis=-1)
    return BinScores(np.abs(gaps).max(axis=-1), gaps)


@register_statistic("rate_difference")
def rate_difference(reference: ArrayLike, current: ArrayLike) -> BinScores:
    """|rate_cur − rate_ref| for two bins ``[without, with]`` (refusals, empty or truncated answers)."""
    ref, cur = check_counts(reference, current)
    if ref.shape[-1] != 2:
        raise ValueError(f"rate_difference needs 2 bins [without, with], got {ref.shape[-1]}")
    change = shares(cur) - shares(ref)
    return BinScores(np.abs(change[..., 1]), change)


@register_statistic("total_variation")
def total_variation(reference: ArrayLike, current: ArrayLike) -> BinScores:
    """Half the L1 distance of the share vectors: the share of traffic that would have to move."""
    ref, cur = check_counts(reference, current)
    change = shares(cur) - shares(ref)
    terms = np.abs(change) / 2
    return BinScores(terms.sum(axis=-1), terms)


def value_histograms(
    reference: ArrayLike, current: ArrayLike
) -> tuple[NDArray[np.float64], NDArray[np.int64], NDArray[np.int64]]:
    """Counts of each distinct value of two numeric samples, over their sorted pooled values."""
    ref = np.asarray(reference, dtype=np.float64).ravel()
    cur = np.asarray(current, dtype=np.float64).ravel()
    for name, sample in (("reference", ref), ("current", cur)):
        if sample.size == 0:
            raise ValueError(f"the {name} sample is empty")
        if np.isnan(sample).any():
            raise ValueError(f"NaN in {name} sample")
    values, codes = np.unique(np.concatenate([ref, cur]), return_inverse=True)
    k = len(values)
    return (
        values,
        np.bincount(codes[: ref.size], minlength=k),
        np.bincount(codes[ref.size :], minlength=k),
    )


def ks_statistic(reference: ArrayLike, current: ArrayLike) -> float:
    """Two-sample KS statistic of numeric samples (token counts), ties handled exactly."""
    _, ref_counts, cur_counts = value_histograms(reference, current)
    return float(ks_histogram(ref_counts, cur_counts).score)


def distinct_n(texts: list[str], n: int = 2) -> float:
    """Distinct word n-grams over all n-grams in ``texts``: a window's vocabulary diversity.

    Compare it only between windows of similar size: the ratio falls as a window grows.
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    total, seen = 0, set()
    for text in texts:
        words = text.split()
        grams = [tuple(words[i : i + n]) for i in range(len(words) - n + 1)]
        total += len(grams)
        seen.update(grams)
    if total == 0:
        raise ValueError(f"no {n}-grams in {len(texts)} texts")
    return len(seen) / total
