"""Drift signals: a reference and a current window in, a calibrated, explained decision out.

Every signal yields a :class:`DriftResult`: the score, its p-value under the null at these window
sizes, the threshold the score would need at ``alpha``, a noise-corrected effect size, per-bin (or
per-cluster) contributions, and whether it drifted. A signal drifts only when ``p < alpha``, the
effect reaches ``min_effect`` (so huge windows do not alarm on negligible changes) and both windows
hold at least ``min_samples`` rows (so tiny windows do not alarm at all).

Every signal takes optional ``sessions``: a unit id per row of each window
(``monitor.drift.sessions.session_codes``); its null then permutes whole sessions and its result
states the effective sample sizes. ``embedding_drift`` also folds its three tests into one
``combined`` result (``monitor.drift.decision.cauchy_combination``).

>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> ref = rng.normal(size=(400, 8)).astype("float32")
>>> cur = np.concatenate([rng.normal(size=(300, 8)), rng.normal(2, 1, size=(100, 8))])
>>> embedding_drift("prompts", ref, cur).shift.drifted
True
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from monitor.drift.calibration import DEFAULT_DRAWS, Calibrated, calibrate_histogram, check_alpha
from monitor.drift.clusters import ClusterHistogram, cluster_histogram
from monitor.drift.decision import cauchy_combination
from monitor.drift.mean_shift import DEFAULT_COMPONENTS, mean_shift_test
from monitor.drift.sessions import SessionCounts, check_codes, session_counts
from monitor.drift.statistics import value_histograms

Sessions = tuple[ArrayLike, ArrayLike]

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
    """One signal's verdict on one window pair, with what drove it: what ``drift_runs`` stores.

    ``score``/``p_value``/``threshold``/``effect`` are None when the signal was not evaluated
    (too few rows) or has no calibrated test; ``adjusted_p_value`` is set once the alias's
    decision has adjusted it for the other signals (``monitor.drift_job``).
    """

    signal: str
    statistic: str
    score: float | None
    p_value: float | None
    threshold: float | None
    effect: float | None
    n_ref: int
    n_cur: int
    drifted: bool
    contributions: tuple[float, ...] = ()
    reason: str = ""  # why it tripped or did not, e.g. "not tripped: p=0.22 >= alpha=0.01"
    p_method: str | None = None  # permutation | gpd_tail | chi2_tail | cauchy | holm
    n_effective_ref: float | None = None  # n over the sessions' design effect
    n_effective_cur: float | None = None
    adjusted_p_value: float | None = None
    min_detectable_shift: float | None = None  # share caught with 90% power (embeddings)
    details: dict[str, Any] = field(default_factory=dict, hash=False, compare=False)


def not_evaluated(signal: str, n_ref: int, n_cur: int, why: str = "") -> DriftResult:
    """A signal that could not be computed on these windows, with why."""
    reason = why or "no samples in a window"
    return DriftResult(
        signal, "-", None, None, None, None, n_ref, n_cur, False, reason=f"not evaluated: {reason}"
    )


@dataclass(frozen=True)
class EmbeddingDrift:
    """The embedding verdict (mean shift) next to calibrated cluster-histogram scores."""

    shift: DriftResult
    histograms: tuple[DriftResult, ...]
    clusters: ClusterHistogram
    combined: DriftResult  # one test from all three (Cauchy combination of their p-values)

    def top_clusters(self, count: int = 3) -> list[int]:
        """Clusters that carry most of the shift (largest contributions first), to show examples."""
        order = np.argsort(self.shift.contributions)[::-1][:count]
        return [int(j) for j in order if self.shift.contributions[j] > 0]


def verdict(
    calibrated: Calibrated, policy: DriftPolicy, n_ref: int, n_cur: int
) -> tuple[bool, str]:
    """Drifted only if measured on enough rows in both windows, significant and large enough;
    with the first condition that failed (or the numbers that tripped it) as the reason."""
    return check_verdict(calibrated.p_value, calibrated.effect, policy, n_ref, n_cur)


def check_verdict(
    p: float, effect: float, policy: DriftPolicy, n_ref: int, n_cur: int
) -> tuple[bool, str]:
    """``verdict`` on a bare p-value and effect (the combined and adjusted decisions use it)."""
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
    deff = calibrated.design_effect
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
        p_method=calibrated.p_method,
        n_effective_ref=n_ref / deff,
        n_effective_cur=n_cur / deff,
        min_detectable_shift=calibrated.min_detectable_shift,
    )


def row_sessions(sessions: Sessions | None, n_ref: int, n_cur: int) -> Sessions | None:
    """Validated unit ids for both windows, or None when every row is its own session."""
    if sessions is None:
        return None
    ref = check_codes("reference", sessions[0], n_ref)
    cur = check_codes("current", sessions[1], n_cur)
    singletons = (n_ref == 0 or ref.max() + 1 == n_ref) and (n_cur == 0 or cur.max() + 1 == n_cur)
    return None if singletons else (ref, cur)


def binned_sessions(
    sessions: Sessions | None, ref_bins: NDArray[np.intp], cur_bins: NDArray[np.intp], k: int
) -> SessionCounts | None:
    """Per-session bin counts for a histogram test, or None without sessions."""
    units = row_sessions(sessions, len(ref_bins), len(cur_bins))
    if units is None:
        return None
    return session_counts(ref_bins, cur_bins, units[0], units[1], k)


def histogram_drift(
    signal: str,
    statistic: str,
    reference: ArrayLike,
    current: ArrayLike,
    policy: DriftPolicy,
    seed: int = 0,
    draws: int = DEFAULT_DRAWS,
    sessions: SessionCounts | None = None,
) -> DriftResult:
    """Any registered statistic over two count histograms, calibrated by exact permutation."""
    calibrated = calibrate_histogram(
        statistic, reference, current, policy.alpha, draws, seed, sessions
    )
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
    sessions: Sessions | None = None,
    mde_alpha: float | None = None,
) -> EmbeddingDrift:
    """Embedding drift: mean-shift and cluster PSI/JS tests, folded into one ``combined`` test.

    Clusters are fit on both windows pooled with ``k`` from ``choose_k`` unless given; each
    histogram statistic is calibrated by exact permutation and reported under the same policy.
    The combined test trips when the Cauchy combination of the three p-values is below alpha and
    one of the tests reaches its minimum effect. ``mde_alpha`` is the level at which the minimum
    detectable shift is computed (default: alpha over the number of combined tests).
    """
    clusters = cluster_histogram(reference, current, k=k, seed=seed)
    n_ref, n_cur = len(clusters.reference_labels), len(clusters.current_labels)
    units = row_sessions(sessions, n_ref, n_cur)
    tests = 1 + len(histogram_statistics)
    shift = mean_shift_test(
        reference,
        current,
        alpha=policy.alpha,
        seed=seed,
        labels=(clusters.reference_labels, clusters.current_labels),
        components=components,
        sessions=units,
        mde_alpha=policy.alpha / tests if mde_alpha is None else mde_alpha,
    )
    counts = binned_sessions(units, clusters.reference_labels, clusters.current_labels, clusters.k)
    histograms = tuple(
        histogram_drift(
            signal, name, clusters.reference, clusters.current, policy, seed, sessions=counts
        )
        for name in histogram_statistics
    )
    shift_result = to_result(signal, "mean_shift", shift, policy, n_ref, n_cur)
    return EmbeddingDrift(
        shift=shift_result,
        histograms=histograms,
        clusters=clusters,
        combined=combine(signal, (shift_result, *histograms), policy),
    )


def combine(signal: str, parts: tuple[DriftResult, ...], policy: DriftPolicy) -> DriftResult:
    """One result from tests of the same windows: Cauchy-combined p, the largest effect's gate."""
    p_values = [r.p_value for r in parts if r.p_value is not None]
    first = parts[0]
    p = cauchy_combination(p_values)
    effects = [r.effect or 0.0 for r in parts]
    drifted, reason = check_verdict(p, max(effects), policy, first.n_ref, first.n_cur)
    names = "+".join(r.statistic for r in parts)
    return DriftResult(
        signal=signal,
        statistic=f"cauchy({names})",
        score=first.score,
        p_value=p,
        threshold=None,
        effect=first.effect,
        n_ref=first.n_ref,
        n_cur=first.n_cur,
        drifted=drifted,
        contributions=first.contributions,
        reason=reason,
        p_method="cauchy",
        n_effective_ref=min(r.n_effective_ref or r.n_ref for r in parts),
        n_effective_cur=min(r.n_effective_cur or r.n_cur for r in parts),
        min_detectable_shift=first.min_detectable_shift,
    )


def length_bins(
    reference: NDArray[np.float64], current: NDArray[np.float64], bins: int
) -> tuple[NDArray[np.intp], NDArray[np.intp], int]:
    """Each row's pooled-quantile bin (label-blind edges keep the permutation null exact), and k."""
    pooled = np.concatenate([reference, current])
    edges = np.unique(np.quantile(pooled, np.linspace(0, 1, bins + 1)[1:-1]))
    return (
        np.searchsorted(edges, reference, side="right"),
        np.searchsorted(edges, current, side="right"),
        len(edges) + 1,
    )


def length_drift(
    signal: str,
    reference: ArrayLike,
    current: ArrayLike,
    policy: DriftPolicy = LENGTH_POLICY,
    statistic: str = "ks",
    seed: int = 0,
    sessions: Sessions | None = None,
) -> DriftResult:
    """Token-length shift: KS over exact values, or PSI/JS/chi2/G over pooled-decile bins.

    Contributions are per distinct length for KS (signed CDF gaps) and per decile bin otherwise.
    """
    values, ref_counts, cur_counts = value_histograms(reference, current)
    ref = np.asarray(reference, dtype=np.float64).ravel()
    cur = np.asarray(current, dtype=np.float64).ravel()
    if statistic == "ks":
        ref_bins, cur_bins, k = (
            np.searchsorted(values, ref),
            np.searchsorted(values, cur),
            len(values),
        )
    else:
        ref_bins, cur_bins, k = length_bins(ref, cur, LENGTH_BINS)
        ref_counts, cur_counts = (
            np.bincount(ref_bins, minlength=k),
            np.bincount(cur_bins, minlength=k),
        )
    counts = binned_sessions(sessions, ref_bins, cur_bins, k)
    return histogram_drift(signal, statistic, ref_counts, cur_counts, policy, seed, sessions=counts)


def rate_drift(
    signal: str,
    reference: ArrayLike,
    current: ArrayLike,
    policy: DriftPolicy = RATE_POLICY,
    seed: int = 0,
    sessions: Sessions | None = None,
) -> DriftResult:
    """Change in the share of flagged rows (refusals, empty or truncated answers), as a 2×2 test."""
    counts, flags = [], []
    for name, values in (("reference", reference), ("current", current)):
        array = np.asarray(values)
        if array.dtype != np.bool_:
            raise ValueError(f"{name} flags must be booleans, got dtype {array.dtype}")
        counts.append([int(np.count_nonzero(~array)), int(np.count_nonzero(array))])
        flags.append(array.astype(np.intp))
    units = binned_sessions(sessions, flags[0], flags[1], 2)
    return histogram_drift(
        signal, "rate_difference", counts[0], counts[1], policy, seed, sessions=units
    )
