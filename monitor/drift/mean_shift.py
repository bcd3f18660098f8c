"""Mean-embedding shift: the squared distance between the windows' mean embeddings, calibrated.

A new topic in a share ``s`` of the traffic moves the mean embedding by ``s`` times the topic's
offset, in whatever direction that is; on real text this was the most powerful of the tests tried
(see ``benchmarks/drift_power.py``). Under the permutation null (rows shuffled between windows)
the difference of means is close to Gaussian with covariance ``c · Σ``, ``Σ`` the pooled
covariance and ``c = N² / (n_ref · n_cur · (N − 1))``, so the squared distance is a weighted sum
of χ²₁ variables with weights ``c · eigenvalues(Σ)``. Its quantiles are drawn by Monte Carlo from
those weights: the cost is one covariance (on at most MAX_COVARIANCE_ROWS sampled rows), one
eigendecomposition and ``draws × dim`` normal numbers, whatever the window sizes.

>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> ref, cur = rng.normal(size=(500, 16)), rng.normal(0.3, 1, size=(500, 16))
>>> mean_shift_test(ref, cur).p_value < 0.01
True
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray

from monitor.drift.calibration import Calibrated, check_alpha, p_value
from monitor.drift.clusters import check_embeddings

DEFAULT_NULL_DRAWS = 10000
MAX_COVARIANCE_ROWS = 16384


def null_weights(
    ref: NDArray[np.float32],
    cur: NDArray[np.float32],
    pooled_mean: NDArray[np.float64],
    rng: np.random.Generator,
) -> NDArray[np.float64]:
    """Weights of the χ²₁ terms of the null: ``c`` times the pooled covariance's eigenvalues."""
    n_ref, n_cur = len(ref), len(cur)
    total = n_ref + n_cur
    if total > MAX_COVARIANCE_ROWS:
        picked = rng.choice(total, size=MAX_COVARIANCE_ROWS, replace=False)
        rows = np.concatenate([ref[picked[picked < n_ref]], cur[picked[picked >= n_ref] - n_ref]])
    else:
        rows = np.concatenate([ref, cur])
    rows -= pooled_mean.astype(np.float32)
    covariance = (rows.T @ rows).astype(np.float64) / len(rows)
    eigenvalues = np.clip(np.linalg.eigvalsh(covariance), 0.0, None)
    return eigenvalues * total**2 / (n_ref * n_cur * (total - 1))


def cluster_shares(
    projections: NDArray[np.floating], labels: NDArray[np.intp], k: int, size: int
) -> NDArray[np.float64]:
    """Per-cluster sum of row projections onto the shift, divided by the window size."""
    return np.bincount(labels, weights=projections, minlength=k) / size


def mean_shift_test(
    reference: ArrayLike,
    current: ArrayLike,
    alpha: float = 0.01,
    draws: int = DEFAULT_NULL_DRAWS,
    seed: int = 0,
    labels: tuple[ArrayLike, ArrayLike] | None = None,
) -> Calibrated:
    """Test whether the mean embedding moved; ``effect`` estimates the distance between means.

    ``effect`` is ``sqrt(max(0, score − E_null[score]))``: the noise-corrected distance between
    the two windows' mean embeddings. With cluster ``labels`` for (reference, current) rows,
    ``contributions[j]`` is cluster j's part of the score (they sum to it): how much of the shift
    runs through rows of that cluster; negative means the cluster moved against the shift.
    """
    check_alpha(alpha)
    if draws < 1:
        raise ValueError(f"draws must be >= 1, got {draws}")
    ref = check_embeddings("reference", reference)
    cur = check_embeddings("current", current, dim=ref.shape[1])
    n_ref, n_cur = len(ref), len(cur)
    if n_ref + n_cur < 3:
        raise ValueError(f"the mean shift test needs at least 3 rows, got {n_ref + n_cur}")
    ref_mean = ref.mean(axis=0, dtype=np.float64)
    cur_mean = cur.mean(axis=0, dtype=np.float64)
    shift = cur_mean - ref_mean
    score = float(shift @ shift)
    pooled_mean = (n_ref * ref_mean + n_cur * cur_mean) / (n_ref + n_cur)
    rng = np.random.default_rng(seed)
    weights = null_weights(ref, cur, pooled_mean, rng)
    normals = rng.standard_normal((draws, len(weights)), dtype=np.float32)
    null = (normals * normals) @ weights.astype(np.float32)
    contributions = np.zeros(0)
    if labels is not None:
        ref_labels = np.asarray(labels[0], dtype=np.intp)
        cur_labels = np.asarray(labels[1], dtype=np.intp)
        if ref_labels.shape != (n_ref,) or cur_labels.shape != (n_cur,):
            raise ValueError("labels must give one cluster per reference and per current row")
        k = int(max(ref_labels.max(initial=0), cur_labels.max(initial=0))) + 1
        direction = shift.astype(np.float32)
        offset = float(pooled_mean @ shift)
        ref_part = cluster_shares(ref @ direction - offset, ref_labels, k, n_ref)
        cur_part = cluster_shares(cur @ direction - offset, cur_labels, k, n_cur)
        contributions = cur_part - ref_part
    return Calibrated(
        score=score,
        p_value=p_value(score, null.astype(np.float64)),
        threshold=float(np.quantile(null, 1 - alpha, method="higher")),
        effect=float(np.sqrt(max(0.0, score - weights.sum()))),
        contributions=contributions,
    )
