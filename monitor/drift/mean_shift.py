"""Mean shift: how far the windows' mean embeddings (and second moments) moved, calibrated.

A new topic in a share ``s`` of traffic moves the mean embedding by ``s`` times the topic's offset,
whatever direction that is; on real text this beat every cluster-histogram test tried (see
``benchmarks/drift_power.py``). The second moments in the top 32 principal components add power
(10% songs-poems shift at n = 2,000: 0.91 with the mean alone, 0.89 with 16 components, 0.96 with
32) and catch spread-only changes.

The score is ``‖Δ‖²``, the squared difference of the windows' mean feature vectors, where a row's
features are its centred embedding and the products of its top ``components`` principal
coordinates, each block scaled so that its null spread is comparable, the quadratic block then
weighted by ``quadratic_weight``. Under the permutation null (rows shuffled between windows) ``Δ``
is close to Gaussian with covariance ``c · Σ_f`` (``c = N² / (n_ref · n_cur · (N − 1))``), so the
score is a weighted sum of χ²₁ variables; its spread is corrected for the rows' products with
themselves, which the Gaussian counts as noise but a permutation does not move. Cost: moments of
at most MAX_COVARIANCE_ROWS sampled rows, one eigendecomposition, ``draws × features`` normals.

With sessions the permuted units are whole sessions: ``Δ`` is then a sum over sessions of their
feature sums, and the same Gaussian null holds with the sessions' sums as the "rows" (its exact
mean and variance under permuting sessions, see ``session_features``). p-values past the draws
come from the null's cumulants in closed form (``monitor.drift.tails.chi2_tail``).

>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> ref, cur = rng.normal(size=(500, 16)), rng.normal(0.3, 1, size=(500, 16))
>>> mean_shift_test(ref, cur, components=4).p_value < 0.01
True
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray

from monitor.drift.calibration import Calibrated, check_alpha
from monitor.drift.clusters import check_embeddings
from monitor.drift.power import min_detectable_shift
from monitor.drift.sessions import check_codes, design_effect, unit_count, unit_sums
from monitor.drift.tails import chi2_quantile, chi2_tail, monte_carlo_p

DEFAULT_NULL_DRAWS = 5000
DEFAULT_COMPONENTS = 32
DEFAULT_QUADRATIC_WEIGHT = 0.5
MAX_COVARIANCE_ROWS = 8192
# Principal directions with less variance than this share of the top one are numerical noise.
RELATIVE_EIGENVALUE_FLOOR = 1e-6


def quadratic_indices(
    components: int,
) -> tuple[NDArray[np.intp], NDArray[np.intp], NDArray[np.float32]]:
    """Upper-triangle index pairs and weights (√2 off the diagonal, so dot products are (y·y')²)."""
    rows, cols = np.triu_indices(components)
    return rows, cols, np.where(rows == cols, 1.0, np.sqrt(2.0)).astype(np.float32)


def sample_rows(
    ref: NDArray[np.float32], cur: NDArray[np.float32], rng: np.random.Generator
) -> NDArray[np.float32]:
    """Both windows pooled, or a uniform sample of MAX_COVARIANCE_ROWS of them (label-blind)."""
    total = len(ref) + len(cur)
    if total <= MAX_COVARIANCE_ROWS:
        return np.concatenate([ref, cur])
    picked = np.sort(rng.choice(total, size=MAX_COVARIANCE_ROWS, replace=False))
    return np.concatenate(
        [ref[picked[picked < len(ref)]], cur[picked[picked >= len(ref)] - len(ref)]]
    )


def null_spread(
    squared_norms: NDArray[np.float64], eigenvalues: NDArray[np.float64], share: float, total: int
) -> float:
    """Ratio of the permutation null's standard deviation to the plain Gaussian approximation's.

    The Gaussian approximation counts each row's product with itself as noise; under the
    permutation those terms barely vary. With few rows per dimension that made the test
    conservative (FPR 0.02 at a nominal 0.05 for 200 vs 200 rows).
    """
    gaussian = 2 * float(eigenvalues @ eigenvalues) * total**2
    if gaussian == 0:
        return 1.0
    rows = len(squared_norms)
    fourth = squared_norms**2
    # mean over pairs i != j of (f_i . f_j)^2: the Frobenius norm of the Gram minus its diagonal
    cross = (rows**2 * float(eigenvalues @ eigenvalues) - fourth.sum()) / (rows * (rows - 1))
    variance = share * (1 - share) * (1 - 2 * share) ** 2 * total * fourth.mean()
    variance += 2 * (share * (1 - share)) ** 2 * total * (total - 1) * max(cross, 0.0)
    return float(np.sqrt(variance / (gaussian * (share * (1 - share)) ** 2)))


@dataclass(frozen=True)
class QuadraticBlock:
    """Scaled second-moment features of the sampled rows, their covariance, and their shift."""

    features: NDArray[np.float32]
    covariance: NDArray[np.float64]
    shift: NDArray[np.float64]


def quadratic_block(
    sample: NDArray[np.float32],
    covariance: NDArray[np.float64],
    windows: tuple[NDArray[np.float32], NDArray[np.float32]],
    pooled_mean: NDArray[np.float64],
    components: int,
    weight: float,
) -> QuadraticBlock | None:
    """Scaled second-moment features of the sampled rows and their shift between the windows.

    Uses the top ``components`` principal directions that carry variance; None if there are none.
    """
    eigenvalues, vectors = np.linalg.eigh(covariance)
    top = np.arange(len(eigenvalues))[-components:]
    top = top[eigenvalues[top] > RELATIVE_EIGENVALUE_FLOOR * eigenvalues[-1]]
    if len(top) == 0:
        return None
    basis = vectors[:, top].astype(np.float32)
    rows, cols, weights = quadratic_indices(len(top))
    coords = sample @ basis
    quadratic = coords[:, rows] * coords[:, cols] * weights
    quadratic -= quadratic.mean(axis=0)
    covariance_q = (quadratic.T @ quadratic).astype(np.float64) / len(quadratic)
    norm = float(np.linalg.norm(covariance_q))
    if norm <= 0:
        return None
    offset = pooled_mean.astype(np.float32) @ basis
    moments = []
    for window in windows:
        centred = window @ basis - offset
        moments.append((centred.T @ centred / len(window))[rows, cols] * weights)
    scale = np.sqrt(weight / norm)
    return QuadraticBlock(
        features=quadratic * np.float32(scale),
        covariance=covariance_q * scale**2,
        shift=(moments[1] - moments[0]).astype(np.float64) * scale,
    )


@dataclass(frozen=True)
class GaussianNull:
    """The null of ‖Δ‖²: a weighted sum of χ²₁ along ``vectors``, its spread permutation-corrected."""

    weights: NDArray[np.float64]
    vectors: NDArray[np.float64]
    spread: float

    @property
    def cumulants(self) -> tuple[float, float, float]:
        """Mean, variance and third cumulant of ``mean + spread · (Σ w χ²₁ − mean)``."""
        w = self.weights
        return (
            float(w.sum()),
            self.spread**2 * 2 * float(w @ w),
            self.spread**3 * 8 * float(w @ (w * w)),
        )

    def draw(self, draws: int, rng: np.random.Generator) -> NDArray[np.float64]:
        """Draws of ‖Δ‖² under the null."""
        mean = float(self.weights.sum())
        normals = rng.standard_normal((draws, len(self.weights)), dtype=np.float32)
        draws_sq = (normals * normals) @ self.weights.astype(np.float32)
        return (mean + self.spread * (draws_sq - mean)).astype(np.float64)


def gaussian_null(
    covariance: NDArray[np.float64], squared_norms: NDArray[np.float64], n_ref: int, n_cur: int
) -> GaussianNull:
    """The null of ‖Δ‖² for units (rows or sessions) with this feature covariance and norms."""
    total = n_ref + n_cur
    eigenvalues, vectors = np.linalg.eigh(covariance)
    eigenvalues = np.clip(eigenvalues, 0.0, None)
    weights = eigenvalues * total**2 / (n_ref * n_cur * (total - 1))
    spread = null_spread(squared_norms, eigenvalues, n_cur / total, total)
    return GaussianNull(weights, vectors, spread)


def null_draws(
    covariance: NDArray[np.float64],
    squared_norms: NDArray[np.float64],
    n_ref: int,
    n_cur: int,
    draws: int,
    rng: np.random.Generator,
) -> NDArray[np.float64]:
    """Draws of ‖Δ‖² under the permutation null (Gaussian shape, permutation mean and spread)."""
    return gaussian_null(covariance, squared_norms, n_ref, n_cur).draw(draws, rng)


def sample_units(
    ref: NDArray[np.float32],
    cur: NDArray[np.float32],
    codes: NDArray[np.intp],
    rng: np.random.Generator,
) -> tuple[NDArray[np.float32], NDArray[np.intp]]:
    """Whole sessions picked label-blind until MAX_COVARIANCE_ROWS rows, with their unit ids."""
    pooled = np.concatenate([ref, cur])
    if len(pooled) <= MAX_COVARIANCE_ROWS:
        return pooled, codes
    sizes = np.bincount(codes)
    order = rng.permutation(len(sizes))
    enough = int(np.searchsorted(np.cumsum(sizes[order]), MAX_COVARIANCE_ROWS)) + 1
    keep = np.zeros(len(sizes), dtype=bool)
    keep[order[:enough]] = True
    mask = keep[codes]
    _, renumbered = np.unique(codes[mask], return_inverse=True)
    return pooled[mask], renumbered.astype(np.intp)


def session_features(
    features: NDArray[np.float32], codes: NDArray[np.intp], n: tuple[int, int], g: tuple[int, int]
) -> NDArray[np.float64]:
    """Per-session feature sums scaled so the row-level null formulas hold with sessions as rows.

    ``Δ = N / (n_ref·n_cur) · S_cur`` (S_cur: the current window's sum of centred features), and
    sampling ``G_cur`` of ``G`` sessions gives ``Cov S_cur = G_cur·G_ref / (G·(G−1)) · Σ_g s_g s_gᵀ``;
    scaling each ``s_g`` by ``N·G_cur·G_ref / (n_ref·n_cur·G)`` makes that the row-level formula
    with ``G_ref``, ``G_cur`` in place of ``n_ref``, ``n_cur`` (and 1 when every session is one row).
    """
    (n_ref, n_cur), (g_ref, g_cur) = n, g
    factor = (n_ref + n_cur) * g_cur * g_ref / (n_ref * n_cur * (g_ref + g_cur))
    return unit_sums(features, codes) * factor


def typical_offset(
    pooled: NDArray[np.float32], labels: NDArray[np.intp], pooled_mean: NDArray[np.float64]
) -> NDArray[np.float64] | None:
    """The offset from the pooled mean of the cluster whose mean is the median distance away."""
    counts = np.bincount(labels)
    used = np.flatnonzero(counts > 0)
    if len(used) < 2:
        return None
    # one-hot product: float32 and (rows × k), cheaper than sorting a (rows × dim) copy
    one_hot = np.zeros((len(labels), len(counts)), dtype=np.float32)
    one_hot[np.arange(len(labels)), labels] = 1.0
    means = (one_hot.T @ pooled)[used].astype(np.float64) / counts[used][:, None]
    offsets = means - pooled_mean
    distances = np.linalg.norm(offsets, axis=1)
    return offsets[int(np.argsort(distances)[len(distances) // 2])]


def mean_shift_test(
    reference: ArrayLike,
    current: ArrayLike,
    alpha: float = 0.01,
    draws: int = DEFAULT_NULL_DRAWS,
    seed: int = 0,
    labels: tuple[ArrayLike, ArrayLike] | None = None,
    components: int = DEFAULT_COMPONENTS,
    quadratic_weight: float = DEFAULT_QUADRATIC_WEIGHT,
    sessions: tuple[ArrayLike, ArrayLike] | None = None,
    mde_alpha: float | None = None,
) -> Calibrated:
    """Test whether the embeddings' mean (and top-component second moments) moved between windows.

    ``effect`` is the noise-corrected distance between the windows' mean embeddings,
    ``sqrt(max(0, ‖Δmean‖² − E_null‖Δmean‖²))``. With cluster ``labels`` for the (reference,
    current) rows, ``contributions[j]`` is cluster j's part of ``‖Δmean‖²`` (they sum to it):
    how much of the mean shift runs through that cluster; negative means it moved against it.
    With ``sessions`` (unit ids per row of each window, ``monitor.drift.sessions``) the null
    permutes whole sessions. ``min_detectable_shift`` (needs ``labels``) is computed at
    ``mde_alpha`` (default ``alpha``): the level a single signal must reach in the caller's
    combined decision. ``components=0`` tests the mean alone. Identical rows score 0, p = 1.
    """
    check_alpha(alpha)
    if draws < 1:
        raise ValueError(f"draws must be >= 1, got {draws}")
    if quadratic_weight < 0:
        raise ValueError(f"quadratic_weight must be >= 0, got {quadratic_weight}")
    ref, cur, ref_codes, cur_codes = _checked_windows(reference, current, sessions)
    n_ref, n_cur = len(ref), len(cur)
    total = n_ref + n_cur
    g_ref, g_cur = unit_count(ref_codes), unit_count(cur_codes)
    grouped = g_ref + g_cur < total
    ref_mean = ref.mean(axis=0, dtype=np.float64)
    cur_mean = cur.mean(axis=0, dtype=np.float64)
    mean_shift = cur_mean - ref_mean
    pooled_mean = (n_ref * ref_mean + n_cur * cur_mean) / total
    contributions: tuple[float, ...] = ()
    if labels is not None:
        contributions = cluster_contributions(ref, cur, labels, mean_shift, pooled_mean)
    rng = np.random.default_rng(seed)
    if grouped:
        codes = np.concatenate([ref_codes, cur_codes + g_ref])
        sample, sample_codes = sample_units(ref, cur, codes, rng)
    else:
        sample, sample_codes = sample_rows(ref, cur, rng), np.arange(0)
    sample = sample - pooled_mean.astype(np.float32)
    covariance = (sample.T @ sample).astype(np.float64) / len(sample)
    norm = float(np.linalg.norm(covariance))
    if norm == 0:
        return Calibrated(0.0, 1.0, 0.0, 0.0, contributions)
    linear = sample * np.float32(1 / np.sqrt(norm))
    shift = mean_shift / np.sqrt(norm)
    block = None
    if components > 0 and quadratic_weight > 0:
        block = quadratic_block(
            sample, covariance, (ref, cur), pooled_mean, components, quadratic_weight
        )
    if block is not None:
        shift = np.concatenate([shift, block.shift])
    if grouped:
        sizes = (n_ref, n_cur)
        feature_cov, null = _session_null(linear, block, sample_codes, sizes, (g_ref, g_cur))
        deff = design_effect(linear, sample_codes)
        units_total, units_ref, units_cur = g_ref + g_cur, g_ref, g_cur
    else:
        feature_cov, null = _row_null(linear, block, covariance / norm, (n_ref, n_cur))
        deff = 1.0
        units_total, units_ref, units_cur = total, n_ref, n_cur
    score = float(shift @ shift)
    null_scores = null.draw(draws, rng)
    p, exceed = monte_carlo_p(score, null_scores)
    method = "permutation"
    if exceed == 0:  # past the last draw (monitor.drift.tails: never where a draw reaches it)
        p, method = min(p, chi2_tail(score, null.cumulants)), "chi2_tail"
    dim = ref.shape[1]
    scale = units_total**2 / (units_ref * units_cur * (units_total - 1))
    expected = norm * float(np.trace(feature_cov[:dim, :dim])) * scale
    mde = None
    if labels is not None:
        level = alpha if mde_alpha is None else mde_alpha
        mde = _detectable_shift(np.concatenate([ref, cur]), labels, pooled_mean, null, norm, level)
    return Calibrated(
        score=score,
        p_value=p,
        threshold=float(np.quantile(null_scores, 1 - alpha, method="higher")),
        effect=float(np.sqrt(max(0.0, float(mean_shift @ mean_shift) - expected))),
        contributions=contributions,
        p_method=method,
        design_effect=deff,
        min_detectable_shift=mde,
    )


def _checked_windows(
    reference: ArrayLike, current: ArrayLike, sessions: tuple[ArrayLike, ArrayLike] | None
) -> tuple[NDArray[np.float32], NDArray[np.float32], NDArray[np.intp], NDArray[np.intp]]:
    """Both windows' rows and unit ids (rows are their own units without ``sessions``)."""
    ref = check_embeddings("reference", reference)
    cur = check_embeddings("current", current, dim=ref.shape[1])
    n_ref, n_cur = len(ref), len(cur)
    if n_ref + n_cur < 3:
        raise ValueError(f"the mean shift test needs at least 3 rows, got {n_ref + n_cur}")
    if sessions is None:
        return ref, cur, np.arange(n_ref), np.arange(n_cur)
    ref_codes = check_codes("reference", sessions[0], n_ref)
    cur_codes = check_codes("current", sessions[1], n_cur)
    g_ref, g_cur = unit_count(ref_codes), unit_count(cur_codes)
    if g_ref + g_cur < n_ref + n_cur and min(g_ref, g_cur) < 2:
        raise ValueError(f"each window needs >= 2 sessions, got {g_ref} and {g_cur}")
    return ref, cur, ref_codes, cur_codes


def _session_null(
    linear: NDArray[np.float32],
    block: QuadraticBlock | None,
    sample_codes: NDArray[np.intp],
    sizes: tuple[int, int],
    units: tuple[int, int],
) -> tuple[NDArray[np.float64], GaussianNull]:
    """The null of the score when whole sessions are permuted: from per-session feature sums."""
    features = linear if block is None else np.hstack([linear, block.features])
    per_unit = session_features(features, sample_codes, sizes, units)
    feature_cov = per_unit.T @ per_unit / len(per_unit)
    squared_norms = np.einsum("gd,gd->g", per_unit, per_unit)
    return feature_cov, gaussian_null(feature_cov, squared_norms, units[0], units[1])


def _row_null(
    linear: NDArray[np.float32],
    block: QuadraticBlock | None,
    linear_cov: NDArray[np.float64],
    sizes: tuple[int, int],
) -> tuple[NDArray[np.float64], GaussianNull]:
    """The null of the score when rows are permuted (the mean block, and the quadratic one)."""
    feature_cov = linear_cov
    squared_norms = np.einsum("nd,nd->n", linear, linear, dtype=np.float64)
    if block is not None:
        cross = (linear.T @ block.features).astype(np.float64) / len(linear)
        feature_cov = np.block([[feature_cov, cross], [cross.T, block.covariance]])
        squared_norms += np.einsum("nd,nd->n", block.features, block.features, dtype=np.float64)
    return feature_cov, gaussian_null(feature_cov, squared_norms, sizes[0], sizes[1])


def _detectable_shift(
    rows: NDArray[np.float32],
    labels: tuple[ArrayLike, ArrayLike],
    pooled_mean: NDArray[np.float64],
    null: GaussianNull,
    norm: float,
    level: float,
) -> float | None:
    """The share of traffic moving to a typical cluster that this test catches at ``level``."""
    pooled_labels = np.concatenate([np.asarray(labels[0]), np.asarray(labels[1])])
    offset = typical_offset(rows, pooled_labels.astype(np.intp), pooled_mean)
    if offset is None:
        return None
    direction = np.zeros(len(null.weights))
    direction[: rows.shape[1]] = offset / np.sqrt(norm)
    threshold = chi2_quantile(level, null.cumulants)
    return min_detectable_shift(null.weights, null.vectors.T @ direction, null.spread, threshold)


def cluster_contributions(
    ref: NDArray[np.float32],
    cur: NDArray[np.float32],
    labels: tuple[ArrayLike, ArrayLike],
    mean_shift: NDArray[np.float64],
    pooled_mean: NDArray[np.float64],
) -> tuple[float, ...]:
    """Each cluster's part of ‖Δmean‖²: its rows' projections on the shift, current minus reference."""
    ref_labels = np.asarray(labels[0], dtype=np.intp)
    cur_labels = np.asarray(labels[1], dtype=np.intp)
    if ref_labels.shape != (len(ref),) or cur_labels.shape != (len(cur),):
        raise ValueError("labels must give one cluster per reference and per current row")
    if min(ref_labels.min(), cur_labels.min()) < 0:
        raise ValueError("cluster labels must be >= 0")
    k = int(max(ref_labels.max(), cur_labels.max())) + 1
    direction = mean_shift.astype(np.float32)
    offset = float(pooled_mean @ mean_shift)
    ref_part = np.bincount(ref_labels, weights=ref @ direction - offset, minlength=k) / len(ref)
    cur_part = np.bincount(cur_labels, weights=cur @ direction - offset, minlength=k) / len(cur)
    return tuple(float(x) for x in cur_part - ref_part)
