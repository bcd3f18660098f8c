"""Drift signals: a reference and a current window in, a calibrated, explained decision out.

Every signal yields a :class:`DriftResult`: the score, its p-value under the null at these window
sizes, the threshold the score would need at ``alpha``, a noise-corrected effect size, per-bin (or
per-cluster) contributions, and whether it drifted. A signal drifts only when ``p < alpha``, the
effect reaches ``min_effect`` (so huge windows do not alarm on negligible changes) and both windows
hold at least ``min_samples`` rows (so tiny windows do not alarm at all).

>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> ref = rng.normal(size=(400, 8)).astype("float32")
>>> cur = np.concatenate([rng.normal(size=(300, 8)), rng.normal(2, 1, size=(100, 8))])
>>> embedding_drift("prompts", ref, cur).shift.drifted
True
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray

from monitor.drift.calibration import DEFAULT_DRAWS, Calibrated, calibrate_histogram, check_alpha
from monitor.drift.clusters import ClusterHistogram, cluster_histogram
from monitor.drift.mean_shift import DEFAULT_COMPONENTS, mean_shift_test
from monitor.drift.statistics import value_histograms

LENGTH_BINS = 10


@dataclass(frozen=True)
class DriftPolicy:
    """When a signal counts as drifted: significance, smallest effect worth acting on, rows needed."""

    alpha: float = 0.01
    min_effect: float = 0.0
    min_samples: int = 100

    def __post_init__(self) -> None:
        """Reject settings that cannot work, naming the field and the value."""
        check_alpha(self.alpha)
        if self.min_effect < 0:
            raise ValueError(f"min_effect must be >= 0, got {self.min_effect}")
        if self.min_samples < 1:
            raise ValueError(f"min_samples must be >= 1, got {self.min_samples}")


# Embedding effect = distance between the windows' mean embeddings (unit vectors): 0.01 is about
# 4% of traffic moving to a topic as distinct as songs-poems is from the chit-chat/fortune pool.
EMBEDDING_POLICY = DriftPolicy(min_effect=0.01)
# Rate effect = rate change beyond noise: 2 percentage points of refusals, empty or cut answers.
RATE_POLICY = DriftPolicy(min_effect=0.02)
# Length effect = KS distance beyond noise: the token-count CDFs differ by 3 points somewhere
# (about 5% of prompts moving into the long tail; 0.05 missed most 10% shifts at n = 2,000).
LENGTH_POLICY = DriftPolicy(min_effect=0.03)


@dataclass(frozen=True)
class DriftResult:
    """One signal's verdict on one window pair, with what drove it."""

    signal: str
    statistic: str
    score: float
    p_value: float
    threshold: float
    effect: float
    n_ref: int
    n_cur: int
    drifted: bool
    contributions: tuple[float, ...]
    reason: str = ""  # why it tripped or did not, e.g. "not tripped: p=0.22 >= alpha=0.01"


@dataclass(frozen=True)
class EmbeddingDrift:
    """The embedding verdict (mean shift) next to calibrated cluster-histogram scores."""

    shift: DriftResult
    histograms: tuple[DriftResult, ...]
    clusters: ClusterHistogram

    def top_clusters(self, count: int = 3) -> list[int]:
        """Clusters that carry most of the shift (largest contributions first), to show examples."""
        order = np.argsort(self.shift.contributions)[::-1][:count]
        return [int(j) for j in order if self.shift.contributions[j] > 0]


def verdict(
    calibrated: Calibrated, policy: DriftPolicy, n_ref: int, n_cur: int
) -> tuple[bool, str]:
    """Drifted only if measured on enough rows in both windows, significant and large enough;
    with the first condition that failed (or the numbers that tripped it) as the reason."""
    p, effect = calibrated.p_value, calibrated.effect
    if min(n_ref, n_cur) < policy.min_samples:
        return False, f"not tripped: fewer than {policy.min_samples} samples in a window"
    if p >= policy.alpha:
        return False, f"not tripped: p={p:.3g} >= alpha={policy.alpha}"
    if effect < policy.min_effect:
        return False, f"not tripped: effect {effect:.3g} < min_effect {policy.min_effect}"
    return True, f"tripped: p={p:.3g} < {policy.alpha}, effect {effect:.3g}"


def decide(calibrated: Calibrated, policy: DriftPolicy, n_ref: int, n_cur: int) -> bool:
    """Whether ``verdict`` says drifted (for callers that need no reason)."""
    return verdict(calibrated, policy, n_ref, n_cur)[0]


def to_result(
    signal: str,
    statistic: str,
    calibrated: Calibrated,
    policy: DriftPolicy,
    n_ref: int,
    n_cur: int,
) -> DriftResult:
    """Package a calibrated score and the policy's decision as a DriftResult."""
    drifted, reason = verdict(calibrated, policy, n_ref, n_cur)
    return DriftResult(
        signal=signal,
        statistic=statistic,
        score=calibrated.score,
        p_value=calibrated.p_value,
        threshold=calibrated.threshold,
        effect=calibrated.effect,
        n_ref=n_ref,
        n_cur=n_cur,
        drifted=drifted,
        contributions=calibrated.contributions,
        reason=reason,
    )


def histogram_drift(
    signal: str,
    statistic: str,
    reference: ArrayLike,
    current: ArrayLike,
    policy: DriftPolicy,
    seed: int = 0,
    draws: int = DEFAULT_DRAWS,
) -> DriftResult:
    """Any registered statistic over two count histograms, calibrated by exact permutation."""
    calibrated = calibrate_histogram(statistic, reference, current, policy.alpha, draws, seed)
    n_ref, n_cur = int(np.sum(reference)), int(np.sum(current))
    return to_result(signal, statistic, calibrated, policy, n_ref, n_cur)


def embedding_drift(
    signal: str,
    reference: ArrayLike,
    current: ArrayLike,
    policy: DriftPolicy = EMBEDDING_POLICY,
    seed: int = 0,
    k: int | None = None,
    histogram_statistics: tuple[str, ...] = ("psi", "js"),
    components: int = DEFAULT_COMPONENTS,
) -> EmbeddingDrift:
    """Embedding drift: the mean-shift test decides; clusters explain it and carry PSI/JS.

    Clusters are fit on both windows pooled with ``k`` from ``choose_k`` unless given; each
    histogram statistic is calibrated by exact permutation and reported under the same policy.
    """
    clusters = cluster_histogram(reference, current, k=k, seed=seed)
    n_ref, n_cur = len(clusters.reference_labels), len(clusters.current_labels)
    shift = mean_shift_test(
        reference,
        current,
        alpha=policy.alpha,
        seed=seed,
        labels=(clusters.reference_labels, clusters.current_labels),
        components=components,
    )
    histograms = tuple(
        histogram_drift(signal, name, clusters.reference, clusters.current, policy, seed)
        for name in histogram_statistics
    )
    return EmbeddingDrift(
        shift=to_result(signal, "mean_shift", shift, policy, n_ref, n_cur),
        histograms=histograms,
        clusters=clusters,
    )


def length_bins(
    reference: NDArray[np.float64], current: NDArray[np.float64], bins: int
) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    """Counts over pooled-quantile bins (label-blind edges keep the permutation null exact)."""
    pooled = np.concatenate([reference, current])
    edges = np.unique(np.quantile(pooled, np.linspace(0, 1, bins + 1)[1:-1]))
    size = len(edges) + 1
    return (
        np.bincount(np.searchsorted(edges, reference, side="right"), minlength=size),
        np.bincount(np.searchsorted(edges, current, side="right"), minlength=size),
    )


def length_drift(
    signal: str,
    reference: ArrayLike,
    current: ArrayLike,
    policy: DriftPolicy = LENGTH_POLICY,
    statistic: str = "ks",
    seed: int = 0,
) -> DriftResult:
    """Token-length shift: KS over exact values, or PSI/JS/chi2/G over pooled-decile bins.

    Contributions are per distinct length for KS (signed CDF gaps) and per decile bin otherwise.
    """
    values, ref_counts, cur_counts = value_histograms(reference, current)
    if statistic != "ks":
        ref_values = np.repeat(values, ref_counts)
        cur_values = np.repeat(values, cur_counts)
        ref_counts, cur_counts = length_bins(ref_values, cur_values, LENGTH_BINS)
    return histogram_drift(signal, statistic, ref_counts, cur_counts, policy, seed)


def rate_drift(
    signal: str,
    reference: ArrayLike,
    current: ArrayLike,
    policy: DriftPolicy = RATE_POLICY,
    seed: int = 0,
) -> DriftResult:
    """Change in the share of flagged rows (refusals, empty or truncated answers), as a 2×2 test."""
    counts = []
    for name, flags in (("reference", reference), ("current", current)):
        array = np.asarray(flags)
        if array.dtype != np.bool_:
            raise ValueError(f"{name} flags must be booleans, got dtype {array.dtype}")
        counts.append([int(np.count_nonzero(~array)), int(np.count_nonzero(array))])
    return histogram_drift(signal, "rate_difference", counts[0], counts[1], policy, seed)
