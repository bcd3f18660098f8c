"""One decision from many signals, with a stated error rate.

Two steps, both valid whatever the dependence between the signals:

- ``cauchy_combination`` folds tests of one thing (the embedding mean-shift, cluster PSI and
  cluster JS tests of one field) into one p-value (Liu & Xie 2020, ACAT): for small p it is close
  to the harmonic mean of the p-values, so it keeps the power of whichever test is strongest on
  this shift, at about ``alpha / m`` for that test, and its tail holds under arbitrary dependence.
- ``holm`` adjusts the p-values of every signal of an alias (Holm 1979): "some signal drifted" is
  then a decision whose family-wise false-alarm rate is at most ``alpha``.

>>> holm([0.001, 0.04, 0.5]).tolist()
[0.003, 0.08, 0.5]
>>> round(cauchy_combination([0.001, 0.9, 0.9]), 4)
0.0031
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from numpy.typing import NDArray

# tan((0.5 - p)·π) overflows for p below ~1e-16: use its expansion 1 / (p·π) there.
SMALL_P = 1e-15


def cauchy_combination(p_values: Sequence[float], weights: Sequence[float] | None = None) -> float:
    """The Cauchy (ACAT) combination of p-values: one p-value, valid under any dependence."""
    p = np.asarray(p_values, dtype=np.float64)
    if p.ndim != 1 or len(p) == 0:
        raise ValueError("cauchy_combination needs a non-empty list of p-values")
    if ((p <= 0) | (p > 1) | np.isnan(p)).any():
        raise ValueError(f"p-values must be in (0, 1], got {p.tolist()}")
    w = np.full(len(p), 1 / len(p)) if weights is None else np.asarray(weights, dtype=np.float64)
    if w.shape != p.shape or (w < 0).any() or w.sum() <= 0:
        raise ValueError("weights must be non-negative, one per p-value, not all 0")
    w = w / w.sum()
    terms = np.where(p < SMALL_P, 1 / (np.maximum(p, 1e-300) * np.pi), np.tan((0.5 - p) * np.pi))
    statistic = float(w @ terms)
    if statistic > 1e15:  # far tail: P(Cauchy > t) = 1 / (π·t)
        return float(1 / (statistic * np.pi))
    return float(min(1.0, max(0.5 - np.arctan(statistic) / np.pi, 1e-300)))


def holm(p_values: Sequence[float]) -> NDArray[np.float64]:
    """Holm step-down adjusted p-values (in the input order): reject where adjusted < alpha."""
    p = np.asarray(p_values, dtype=np.float64)
    m = len(p)
    if m == 0:
        return p
    order = np.argsort(p, kind="stable")
    stepped = np.maximum.accumulate((m - np.arange(m)) * p[order])
    adjusted = np.empty(m)
    adjusted[order] = np.minimum(stepped, 1.0)
    return adjusted
