"""p-values beyond the permutation floor, so a strong drift ranks above a merely clear one.

A Monte Carlo p-value never goes below ``1 / (draws + 1)``. When no null draw reaches the observed
score, the p-value comes from a tail model instead:

- ``gpd_tail``: a generalised Pareto fitted (probability-weighted moments, Hosking & Wallis 1987)
  to the top TAIL_SHARE of the draws, the method of Knijnenburg et al. (2009). Its shape is capped
  at the exponential tail: a bounded fitted tail would give p = 0 to anything past its end, while
  the histogram statistics (PSI, JS, G, chi-square) have chi-square-like, unbounded tails.
- ``chi2_tail``: a scaled, shifted chi-square matched to the first three cumulants of a known null
  (the mean-shift test's weighted sum of chi-squares), in closed form.

Only past the last draw, and never above the floor: wherever a draw reaches the score the Monte
Carlo p-value stands. A decision at any alpha above the floor is then the Monte Carlo one, valid
by construction. (Taking the smaller of the two whenever fewer than 10 draws reached the score let
the tail fit's noise decide at alpha / 3, Holm's first step: that added false alarms.)

>>> import numpy as np
>>> null = np.random.default_rng(0).chisquare(5, size=2000)
>>> p, method = tail_p_value(60.0, null)
>>> method, p < 1 / 2001
('gpd_tail', True)
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

# The tail fit uses at least twice this many top draws, and needs 20 times as many draws.
MIN_EXCEEDANCES = 10
TAIL_SHARE = 0.1
# Scores within this relative distance of the observed one count as ties (float noise).
TIE_TOLERANCE = 1e-9
SMALLEST_P = float(np.finfo(np.float64).tiny)


def monte_carlo_p(observed: float, null: NDArray[np.float64]) -> tuple[float, int]:
    """(1 + #null ≥ observed) / (1 + draws), and the exceedance count: never 0, valid at any draws."""
    ties = TIE_TOLERANCE * max(abs(observed), 1e-300)
    exceed = int(np.count_nonzero(null >= observed - ties))
    return (1 + exceed) / (1 + len(null)), exceed


def gpd_tail(observed: float, null: NDArray[np.float64]) -> float:
    """Tail probability of ``observed`` from a generalised Pareto fit to the top draws."""
    ordered = np.sort(null)
    top = max(MIN_EXCEEDANCES * 2, int(len(ordered) * TAIL_SHARE))
    start = len(ordered) - top
    threshold = float(ordered[start - 1]) if start > 0 else float(ordered[0])
    excess = ordered[start:] - threshold
    a0 = float(excess.mean())
    if a0 <= 0:
        return SMALLEST_P  # a degenerate null (all draws equal): anything above it is extreme
    plotting = (np.arange(1, top + 1) - 0.35) / top
    a1 = float(np.mean((1 - plotting) * excess))
    shape = a0 / (a0 - 2 * a1) - 2 if a0 != 2 * a1 else 0.0
    share = top / len(ordered)
    y = observed - threshold
    if shape >= 0:  # bounded or exponential fit: keep the exponential (never cut the tail off)
        return max(SMALLEST_P, share * float(np.exp(-y / a0)))
    scale = 2 * a0 * a1 / (a0 - 2 * a1)
    return max(SMALLEST_P, share * float((1 - shape * y / scale) ** (1 / shape)))


def tail_p_value(observed: float, null: NDArray[np.float64]) -> tuple[float, str]:
    """The permutation p-value, or a fitted-tail one past the last draw; with the method's name."""
    p, exceed = monte_carlo_p(observed, null)
    if exceed > 0 or len(null) < MIN_EXCEEDANCES * 20:
        return p, "permutation"
    return min(p, gpd_tail(observed, null)), "gpd_tail"


def chi2_tail(observed: float, cumulants: tuple[float, float, float]) -> float:
    """P(T ≥ observed) for T matched to a scaled, shifted chi-square by its first 3 cumulants."""
    from scipy.special import chdtrc  # scipy ships with scikit-learn; imported only when needed

    mean, variance, third = cumulants
    if variance <= 0:
        return 1.0 if observed <= mean else SMALLEST_P
    skew = third / variance**1.5
    if skew <= 1e-6:  # (nearly) symmetric: the normal tail
        from scipy.special import ndtr

        return max(SMALLEST_P, float(ndtr(-(observed - mean) / np.sqrt(variance))))
    dof = 8 / skew**2
    x = dof + (observed - mean) * np.sqrt(2 * dof / variance)
    return max(SMALLEST_P, float(chdtrc(dof, max(x, 0.0))))


def chi2_quantile(alpha: float, cumulants: tuple[float, float, float]) -> float:
    """The (1 − alpha) quantile of the same cumulant-matched chi-square."""
    from scipy.special import chdtri, ndtri

    mean, variance, third = cumulants
    if variance <= 0:
        return mean
    skew = third / variance**1.5
    if skew <= 1e-6:
        return mean + float(ndtri(1 - alpha)) * np.sqrt(variance)
    dof = 8 / skew**2
    return mean + (float(chdtri(dof, alpha)) - dof) * np.sqrt(variance / (2 * dof))
