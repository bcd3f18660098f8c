"""Minimum detectable shift: the share of traffic moving to a new topic that a test catches.

For the mean-shift test the null of ``‖Δ‖²`` is a weighted sum of chi-squares with weights ``w_j``
along the null covariance's eigenvectors ``v_j``. A share ``s`` of traffic moving to a topic whose
mean embedding sits at offset ``a`` from the pooled mean adds ``s·a`` to ``Δ``, so
``E‖Δ‖² = Σw + s²‖a‖²`` and ``Var‖Δ‖² = spread²·2Σw² + 4s²·Σ w_j (v_j·a)²``; a normal
approximation of that gives the power at ``s``, and bisection the ``s`` reaching ``power``. The
offset is that of a typical reference cluster (the median distance of the k-means clusters' means
from the pooled mean), so the answer reads "a new topic as distinct as the ones already there".
The second-moment block adds power that this ignores, so the figure errs on the safe side.

>>> import numpy as np
>>> weights = np.full(10, 1e-3)
>>> projections = np.zeros(10); projections[0] = 0.5
>>> round(min_detectable_shift(weights, projections, 1.0, threshold=0.02), 2)
0.31
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

DEFAULT_POWER = 0.9
BISECTION_STEPS = 40


def shift_power(
    share: float,
    weights: NDArray[np.float64],
    projections: NDArray[np.float64],
    spread: float,
    threshold: float,
) -> float:
    """Approximate power of ``‖Δ‖² > threshold`` when a share of traffic moves by the offset."""
    from scipy.special import ndtr

    mean = float(weights.sum()) + share**2 * float(projections @ projections)
    variance = spread**2 * 2 * float(weights @ weights)
    variance += 4 * share**2 * float(weights @ (projections * projections))
    if variance <= 0:
        return float(mean > threshold)
    return float(ndtr((mean - threshold) / np.sqrt(variance)))


def min_detectable_shift(
    weights: NDArray[np.float64],
    projections: NDArray[np.float64],
    spread: float,
    threshold: float,
    power: float = DEFAULT_POWER,
) -> float | None:
    """Smallest share in (0, 1] caught with ``power``; None when even all traffic is not enough."""
    if not 0 < power < 1:
        raise ValueError(f"power must be in (0, 1), got {power}")
    if shift_power(1.0, weights, projections, spread, threshold) < power:
        return None
    low, high = 0.0, 1.0
    for _ in range(BISECTION_STEPS):
        middle = (low + high) / 2
        if shift_power(middle, weights, projections, spread, threshold) >= power:
            high = middle
        else:
            low = middle
    return high
