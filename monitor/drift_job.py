"""One drift evaluation: windows from DuckDB -> calibrated signals -> ``drift_runs`` and gauges.

The statistics themselves are pure functions in ``monitor.drift``; this module only fetches the
windows, decides which statistic each signal uses, and records the outcome with its reason.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

import numpy as np

from monitor.drift.clusters import ClusterHistogram
from monitor.drift.signals import (
    EMBEDDING_POLICY,
    LENGTH_POLICY,
    RATE_POLICY,
    DriftPolicy,
    DriftResult,
    embedding_drift,
    length_drift,
    rate_drift,
)
from monitor.drift.statistics import distinct_n
from monitor.embedding_job import load_vectors
from monitor.metrics import DriftMetrics
from monitor.references import Reference, aliases_with_traffic, ensure_reference, windows
from monitor.store import Store

# Phrases of a refusal; deliberately short and English-only (a judge does the nuanced version).
REFUSAL = re.compile(
    r"\b(I'?m sorry|I am sorry|I can(?:no|')t (?:help|assist|do)|I am unable|As an AI)\b", re.I
)
EXAMPLES_PER_CLUSTER = 3
TOP_CLUSTERS = 5


@dataclass(frozen=True)
class DriftSettings:
    reference_size: int = 2000
    window_size: int = 2000
    min_samples: int = 200
    alpha: float = 0.01
    embedding_model: str = "all-MiniLM-L6-v2"
    seed: int = 0


@dataclass
class SignalResult:
    signal: str
    score: float | None
    threshold: float | None
    p_value: float | None
    n_reference: int
    n_current: int
    drifted: bool
    reason: str
    details: dict[str, Any] = field(default_factory=dict)


class DriftJob:
    """Evaluates every signal for every alias with captured traffic."""

    def __init__(
        self,
        store: Store,
        metrics: DriftMetrics,
        settings: DriftSettings,
        aliases: Callable[[], Iterable[str]],
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.store = store
        self.aliases = aliases  # configured names only: metric labels stay bounded
        self.metrics = metrics
        self.settings = settings
        self.clock = clock

    def run(self) -> dict[str, list[SignalResult]]:
        known = set(self.aliases())
        return {a: self.evaluate(a) for a in aliases_with_traffic(self.store) if a in known}

    def evaluate(self, alias: str) -> list[SignalResult]:
        started = time.perf_counter()
        reference = ensure_reference(self.store, alias)
        if reference is None:
            return []
        ref_rows, cur_rows = windows(
            self.store,
            reference,
            reference_size=self.settings.reference_size,
            window_size=self.settings.window_size,
        )
        results = (
            self._embedding_signals(ref_rows, cur_rows)
            + self._token_signals(ref_rows, cur_rows)
            + self._output_signals(ref_rows, cur_rows)
        )
        self._record(alias, reference, results)
        self.metrics.run_duration.observe(time.perf_counter() - started)
        outcome = (
            "drifted"
            if any(r.drifted for r in results)
            else "insufficient"
            if all(r.score is None for r in results)
            else "clear"
        )
        self.metrics.runs.labels(model=alias, outcome=outcome).inc()
        return results

    # --- signals -----------------------------------------------------------------------------

    def _policy(self, kind: DriftPolicy) -> DriftPolicy:
        """The benchmarked policy of a signal kind, with the configured alpha and sample floor."""
        return replace(kind, alpha=self.settings.alpha, min_samples=self.settings.min_samples)

    def _embedding_signals(
        self, ref_rows: list[dict[str, Any]], cur_rows: list[dict[str, Any]]
    ) -> list[SignalResult]:
        out = []
        for field_name in ("prompt", "response"):
            ref_ids, ref_vec = self._vectors(field_name, ref_rows)
            cur_ids, cur_vec = self._vectors(field_name, cur_rows)
            n_ref, n_cur = len(ref_ids), len(cur_ids)
            names = [f"{field_name}_embedding_{s}" for s in ("mean_shift", "psi", "js")]
            if min(n_ref, n_cur) < 2:
                out += [self._insufficient(n, n_ref, n_cur) for n in names]
                continue
            drift = embedding_drift(
                names[0], ref_vec, cur_vec, self._policy(EMBEDDING_POLICY), self.settings.seed
            )
            examples = _cluster_examples(drift.clusters, cur_ids, cur_rows, field_name)
            for name, result in zip(names, (drift.shift, *drift.histograms), strict=True):
                details = _cluster_details(drift.clusters, result, examples)
                out.append(self._signal(replace(result, signal=name), details))
        return out

    def _token_signals(
        self, ref_rows: list[dict[str, Any]], cur_rows: list[dict[str, Any]]
    ) -> list[SignalResult]:
        out = []
        policy = self._policy(LENGTH_POLICY)
        for column in ("prompt_tokens", "completion_tokens"):
            ref = [r[column] for r in ref_rows if r[column] is not None]
            cur = [r[column] for r in cur_rows if r[column] is not None]
            if not ref or not cur:
                out += [
                    self._insufficient(f"{column}_{s}", len(ref), len(cur)) for s in ("ks", "psi")
                ]
                continue
            details = {
                "reference_mean": float(np.mean(ref)),
                "current_mean": float(np.mean(cur)),
                "reference_quantiles": np.quantile(ref, [0.1, 0.5, 0.9]).tolist(),
                "current_quantiles": np.quantile(cur, [0.1, 0.5, 0.9]).tolist(),
            }
            for statistic in ("ks", "psi"):
                result = length_drift(
                    f"{column}_{statistic}", ref, cur, policy, statistic, self.settings.seed
                )
                out.append(self._signal(result, details))
        return out

    def _output_signals(
        self, ref_rows: list[dict[str, Any]], cur_rows: list[dict[str, Any]]
    ) -> list[SignalResult]:
        checks: dict[str, Callable[[dict[str, Any]], bool]] = {
            "refusal_rate": lambda r: bool(REFUSAL.search(r["response_text"] or "")),
            "empty_rate": lambda r: not (r["response_text"] or "").strip(),
            "truncated_rate": lambda r: r["finish_reason"] == "length",
        }
        out = []
        n_ref, n_cur = len(ref_rows), len(cur_rows)
        for name, check in checks.items():
            if not n_ref or not n_cur:
                out.append(self._insufficient(name, n_ref, n_cur))
                continue
            ref_flags = np.array([check(r) for r in ref_rows], dtype=bool)
            cur_flags = np.array([check(r) for r in cur_rows], dtype=bool)
            result = rate_drift(
                name, ref_flags, cur_flags, self._policy(RATE_POLICY), self.settings.seed
            )
            details = {
                "reference_rate": float(ref_flags.mean()),
                "current_rate": float(cur_flags.mean()),
            }
            out.append(self._signal(result, details))
        out.append(self._diversity(ref_rows, cur_rows))
        return out

    def _diversity(
        self, ref_rows: list[dict[str, Any]], cur_rows: list[dict[str, Any]]
    ) -> SignalResult:
        """Distinct bigrams of equal-size samples (the ratio falls with window size); not tripped."""
        n = min(len(ref_rows), len(cur_rows))
        ref_texts = [r["response_text"] or "" for r in ref_rows[-n:]]
        cur_texts = [r["response_text"] or "" for r in cur_rows[-n:]]
        try:
            ref_value, cur_value = distinct_n(ref_texts, 2), distinct_n(cur_texts, 2)
        except ValueError as exc:
            return self._insufficient("distinct_2", len(ref_rows), len(cur_rows), str(exc))
        return SignalResult(
            "distinct_2",
            cur_value - ref_value,
            None,
            None,
            n,
            n,
            False,
            "reported only: no calibrated test for diversity yet",
            {"reference": ref_value, "current": cur_value},
        )

    # --- decisions and recording -------------------------------------------------------------

    def _signal(self, result: DriftResult, details: dict[str, Any]) -> SignalResult:
        """A library verdict as a stored row, with the reason it tripped or did not."""
        return SignalResult(
            result.signal,
            result.score,
            result.threshold,
            result.p_value,
            result.n_ref,
            result.n_cur,
            result.drifted,
            result.reason,
            {"statistic": result.statistic, "effect": result.effect, **details},
        )

    def _insufficient(self, signal: str, n_ref: int, n_cur: int, why: str = "") -> SignalResult:
        reason = why or "no samples in a window"
        return SignalResult(
            signal, None, None, None, n_ref, n_cur, False, f"not evaluated: {reason}"
        )

    def _vectors(self, field_name: str, rows: list[dict[str, Any]]) -> tuple[list[str], np.ndarray]:
        ids = [r["request_id"] for r in rows]
        return load_vectors(self.store, self.settings.embedding_model, field_name, ids)

    def _record(self, alias: str, reference: Reference, results: list[SignalResult]) -> None:
        run_at = self.clock()
        for r in results:
            self.store.query(
                "INSERT INTO drift_runs (run_at, model_alias, signal, score, threshold, p_value,"
                " n_reference, n_current, drifted, reason, reference_id, details)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    run_at,
                    alias,
                    r.signal,
                    r.score,
                    r.threshold,
                    r.p_value,
                    r.n_reference,
                    r.n_current,
                    r.drifted,
                    r.reason,
                    reference.id,
                    json.dumps(r.details),
                ],
            )
            labels = {"signal": r.signal, "model": alias}
            self.metrics.window_samples.labels(**labels, window="reference").set(r.n_reference)
            self.metrics.window_samples.labels(**labels, window="current").set(r.n_current)
            self.metrics.detected.labels(**labels).set(1 if r.drifted else 0)
            if r.score is not None:
                self.metrics.score.labels(**labels).set(r.score)
            if r.threshold is not None:
                self.metrics.threshold.labels(**labels).set(r.threshold)
            if r.p_value is not None:
                self.metrics.p_value.labels(**labels).set(r.p_value)


def _cluster_examples(
    hist: ClusterHistogram, cur_ids: Sequence[str], cur_rows: list[dict[str, Any]], field_name: str
) -> dict[int, list[str]]:
    text_of = {r["request_id"]: r[f"{field_name}_text"] for r in cur_rows}
    examples: dict[int, list[str]] = {}
    for request_id, label in zip(cur_ids, hist.current_labels.tolist(), strict=True):
        bucket = examples.setdefault(label, [])
        if len(bucket) < EXAMPLES_PER_CLUSTER and text_of.get(request_id):
            bucket.append(text_of[request_id][:200])
    return examples


def _cluster_details(
    hist: ClusterHistogram, result: DriftResult, examples: dict[int, list[str]]
) -> dict[str, Any]:
    """The clusters that moved most and those that grew, with example texts: *what* drifted."""
    ref_share = hist.reference / max(1, hist.reference.sum())
    cur_share = hist.current / max(1, hist.current.sum())
    contributions = result.contributions if len(result.contributions) else cur_share - ref_share

    def describe(j: int) -> dict[str, Any]:
        return {
            "cluster": j,
            "reference_share": float(ref_share[j]),
            "current_share": float(cur_share[j]),
            "contribution": float(contributions[j]),
            "examples": examples.get(j, []),
        }

    by_contribution = np.argsort(-np.asarray(contributions))[:TOP_CLUSTERS]
    growth = cur_share - ref_share
    grew = [int(j) for j in np.argsort(-growth)[:TOP_CLUSTERS] if growth[j] > 0]
    return {
        "k": hist.k,
        "reference_shares": ref_share.round(4).tolist(),
        "current_shares": cur_share.round(4).tolist(),
        "top_clusters": [describe(int(j)) for j in by_contribution],
        "grew": [describe(j) for j in grew],
    }
