"""One drift evaluation: windows from DuckDB -> calibrated signals -> one decision -> ``drift_runs``.

The statistics themselves are pure functions in ``monitor.drift``; this module only fetches the
windows (with each row's session), decides which statistic each signal uses, folds the signals
into the alias's ``combined`` decision and records every outcome with its reason.

The decision: the embedding tests of each field are Cauchy-combined into one signal
(``prompt_embedding``, ``response_embedding``); those and the token-length and rate signals form
the alias's family, whose p-values are Holm-adjusted, so the ``combined`` row trips with a
family-wise false-alarm rate of at most ``drift.alpha``. Component rows (``*_mean_shift``,
``*_psi``, ``*_js``) keep their own, unadjusted verdicts to explain what moved.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

import numpy as np

from monitor.drift.decision import holm
from monitor.drift.sessions import session_codes, too_few_sessions
from monitor.drift.signals import (
    EMBEDDING_POLICY,
    LENGTH_POLICY,
    RATE_POLICY,
    DriftPolicy,
    DriftResult,
    check_verdict,
    embedding_drift,
    length_drift,
    not_evaluated,
    rate_drift,
)
from monitor.drift.statistics import distinct_n
from monitor.drift_explain import cluster_details, cluster_examples, drifted_request_ids
from monitor.embedding_job import load_vectors
from monitor.metrics import DriftMetrics
from monitor.references import Reference, aliases_with_traffic, ensure_reference, windows
from monitor.store import Store

# Phrases of a refusal; deliberately short and English-only (a judge does the nuanced version).
REFUSAL = re.compile(
    r"\b(I'?m sorry|I am sorry|I can(?:no|')t (?:help|assist|do)|I am unable|As an AI)\b", re.I
)
COMBINED_SIGNAL = "combined"
EMBEDDING_FIELDS = ("prompt", "response")
EMBEDDING_COMPONENTS = ("mean_shift", "psi", "js")
TOKEN_COLUMNS = ("prompt_tokens", "completion_tokens")
TOKEN_STATISTICS = ("ks", "psi")
RATE_SIGNALS = ("refusal_rate", "empty_rate", "truncated_rate")
# The signals the alias's decision is made from (Holm across them); components only explain.
FAMILY = (
    *(f"{f}_embedding" for f in EMBEDDING_FIELDS),
    *(f"{c}_{s}" for c in TOKEN_COLUMNS for s in TOKEN_STATISTICS),
    *RATE_SIGNALS,
)


@dataclass(frozen=True)
class DriftSettings:
    reference_size: int = 2000
    window_size: int = 2000
    min_samples: int = 200
    alpha: float = 0.01
    embedding_model: str = "all-MiniLM-L6-v2"
    seed: int = 0
    sessions: bool = True  # permute whole sessions (requests.session_key) in every null


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

    def run(self) -> dict[str, list[DriftResult]]:
        known = set(self.aliases())
        return {a: self.evaluate(a) for a in aliases_with_traffic(self.store) if a in known}

    def evaluate(self, alias: str) -> list[DriftResult]:
        started = time.perf_counter()
        # run_at is when the windows were read: an evaluation describes the data as of then, not
        # as of when its statistics finished (rows captured meanwhile are not in it).
        run_at = self.clock()
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
        results = self._decide(results, len(ref_rows), len(cur_rows))
        self._record(alias, reference, results, run_at)
        self.metrics.run_duration.observe(time.perf_counter() - started)
        combined = results[-1]
        outcome = (
            "drifted"
            if combined.drifted
            else "insufficient"
            if combined.p_value is None
            else "clear"
        )
        self.metrics.runs.labels(model=alias, outcome=outcome).inc()
        return results

    # --- signals -----------------------------------------------------------------------------

    def _policy(self, kind: DriftPolicy) -> DriftPolicy:
        """The benchmarked policy of a signal kind, with the configured alpha and sample floor."""
        return replace(kind, alpha=self.settings.alpha, min_samples=self.settings.min_samples)

    def _sessions(
        self, ref_keys: Sequence[str | None], cur_keys: Sequence[str | None]
    ) -> tuple[np.ndarray, np.ndarray] | None:
        """Unit ids per row of both windows from the stored session keys (None: rows are units)."""
        if not self.settings.sessions:
            return None
        return session_codes(ref_keys), session_codes(cur_keys)

    def _row_sessions(
        self,
        ref_rows: list[dict[str, Any]],
        cur_rows: list[dict[str, Any]],
        keep: Callable[[dict[str, Any]], bool] = lambda r: True,
    ) -> tuple[np.ndarray, np.ndarray] | None:
        return self._sessions(
            [r.get("session_key") for r in ref_rows if keep(r)],
            [r.get("session_key") for r in cur_rows if keep(r)],
        )

    def _embedding_signals(
        self, ref_rows: list[dict[str, Any]], cur_rows: list[dict[str, Any]]
    ) -> list[DriftResult]:
        out = []
        key_of = {r["request_id"]: r.get("session_key") for r in (*ref_rows, *cur_rows)}
        # the level one embedding test must reach to move the alias's decision on its own
        mde_alpha = self.settings.alpha / (len(EMBEDDING_COMPONENTS) * len(FAMILY))
        for field_name in EMBEDDING_FIELDS:
            ref_ids, ref_vec = self._vectors(field_name, ref_rows)
            cur_ids, cur_vec = self._vectors(field_name, cur_rows)
            n_ref, n_cur = len(ref_ids), len(cur_ids)
            combined = f"{field_name}_embedding"
            names = [f"{combined}_{s}" for s in EMBEDDING_COMPONENTS]
            if min(n_ref, n_cur) < 2:
                out += [not_evaluated(n, n_ref, n_cur) for n in (*names, combined)]
                continue
            sessions = self._sessions([key_of[i] for i in ref_ids], [key_of[i] for i in cur_ids])
            if why := too_few_sessions(sessions):
                out += [not_evaluated(n, n_ref, n_cur, why) for n in (*names, combined)]
                continue
            drift = embedding_drift(
                combined,
                ref_vec,
                cur_vec,
                self._policy(EMBEDDING_POLICY),
                self.settings.seed,
                sessions=sessions,
                mde_alpha=mde_alpha,
            )
            examples = cluster_examples(drift.clusters, cur_ids, cur_rows, field_name)
            for name, result in zip(names, (drift.shift, *drift.histograms), strict=True):
                details = cluster_details(drift.clusters, result, examples)
                details["role"] = f"component of {combined} (unadjusted)"
                out.append(replace(result, signal=name, details=details))
            out.append(
                replace(
                    drift.combined,
                    details={
                        "components": {
                            n: r.p_value
                            for n, r in zip(names, (drift.shift, *drift.histograms), strict=True)
                        },
                        "mde_alpha": mde_alpha,
                        # kept only when it drifted: the prompts a teacher labels for a retrain
                        "drifted_request_ids": (
                            drifted_request_ids(drift.clusters, ref_vec, cur_vec, cur_ids)
                            if drift.combined.drifted
                            else []
                        ),
                    },
                )
            )
        return out

    def _token_signals(
        self, ref_rows: list[dict[str, Any]], cur_rows: list[dict[str, Any]]
    ) -> list[DriftResult]:
        out = []
        policy = self._policy(LENGTH_POLICY)
        for column in TOKEN_COLUMNS:
            ref = [r[column] for r in ref_rows if r[column] is not None]
            cur = [r[column] for r in cur_rows if r[column] is not None]
            names = [f"{column}_{s}" for s in TOKEN_STATISTICS]
            if not ref or not cur:
                out += [not_evaluated(name, len(ref), len(cur)) for name in names]
                continue
            sessions = self._row_sessions(ref_rows, cur_rows, _has(column))
            if why := too_few_sessions(sessions):
                out += [not_evaluated(name, len(ref), len(cur), why) for name in names]
                continue
            details = {
                "reference_mean": float(np.mean(ref)),
                "current_mean": float(np.mean(cur)),
                "reference_quantiles": np.quantile(ref, [0.1, 0.5, 0.9]).tolist(),
                "current_quantiles": np.quantile(cur, [0.1, 0.5, 0.9]).tolist(),
            }
            for name, statistic in zip(names, TOKEN_STATISTICS, strict=True):
                result = length_drift(
                    name, ref, cur, policy, statistic, self.settings.seed, sessions=sessions
                )
                out.append(replace(result, details={"statistic": statistic, **details}))
        return out

    def _output_signals(
        self, ref_rows: list[dict[str, Any]], cur_rows: list[dict[str, Any]]
    ) -> list[DriftResult]:
        checks: dict[str, Callable[[dict[str, Any]], bool]] = {
            "refusal_rate": lambda r: bool(REFUSAL.search(r["response_text"] or "")),
            "empty_rate": lambda r: not (r["response_text"] or "").strip(),
            "truncated_rate": lambda r: r["finish_reason"] == "length",
        }
        out = []
        n_ref, n_cur = len(ref_rows), len(cur_rows)
        sessions = self._row_sessions(ref_rows, cur_rows) if n_ref and n_cur else None
        why = too_few_sessions(sessions)
        for name, check in checks.items():
            if not n_ref or not n_cur or why:
                out.append(not_evaluated(name, n_ref, n_cur, why or ""))
                continue
            ref_flags = np.array([check(r) for r in ref_rows], dtype=bool)
            cur_flags = np.array([check(r) for r in cur_rows], dtype=bool)
            result = rate_drift(
                name,
                ref_flags,
                cur_flags,
                self._policy(RATE_POLICY),
                self.settings.seed,
                sessions=sessions,
            )
            details = {
                "reference_rate": float(ref_flags.mean()),
                "current_rate": float(cur_flags.mean()),
            }
            out.append(replace(result, details=details))
        out.append(self._diversity(ref_rows, cur_rows))
        return out

    def _diversity(
        self, ref_rows: list[dict[str, Any]], cur_rows: list[dict[str, Any]]
    ) -> DriftResult:
        """Distinct bigrams of equal-size samples (the ratio falls with window size); not tripped."""
        n = min(len(ref_rows), len(cur_rows))
        ref_texts = [r["response_text"] or "" for r in ref_rows[-n:]]
        cur_texts = [r["response_text"] or "" for r in cur_rows[-n:]]
        try:
            ref_value, cur_value = distinct_n(ref_texts, 2), distinct_n(cur_texts, 2)
        except ValueError as exc:
            return not_evaluated("distinct_2", len(ref_rows), len(cur_rows), str(exc))
        return DriftResult(
            "distinct_2",
            "distinct_n",
            cur_value - ref_value,
            None,
            None,
            None,
            n,
            n,
            False,
            reason="reported only: no calibrated test for diversity yet",
            details={"reference": ref_value, "current": cur_value},
        )

    # --- decisions and recording -------------------------------------------------------------

    def _family_policy(self, signal: str) -> DriftPolicy:
        if signal.endswith("_embedding"):
            return self._policy(EMBEDDING_POLICY)
        if signal in RATE_SIGNALS:
            return self._policy(RATE_POLICY)
        return self._policy(LENGTH_POLICY)

    def _decide(self, results: list[DriftResult], n_ref: int, n_cur: int) -> list[DriftResult]:
        """Holm-adjust the family's p-values, re-decide its members, append the ``combined`` row."""
        index = {r.signal: i for i, r in enumerate(results)}
        members = [s for s in FAMILY if s in index and results[index[s]].p_value is not None]
        out = list(results)
        adjusted = holm([results[index[s]].p_value or 1.0 for s in members])
        tripped = []
        for signal, p in zip(members, adjusted, strict=True):
            result = results[index[signal]]
            drifted, reason = check_verdict(
                float(p),
                result.effect or 0.0,
                self._family_policy(signal),
                result.n_ref,
                result.n_cur,
            )
            if drifted:
                tripped.append(signal)
            out[index[signal]] = replace(
                result,
                adjusted_p_value=float(p),
                drifted=drifted,
                reason=f"{reason} (Holm-adjusted over {len(members)} signals; raw p={result.p_value:.3g})",
            )
        prompt = out[index["prompt_embedding"]] if "prompt_embedding" in index else None
        smallest = float(min(adjusted)) if len(members) else None
        if not members:
            reason = "not evaluated: no signal could be computed"
        elif tripped:
            reason = f"tripped: {', '.join(tripped)} (Holm over {len(members)} signals, alpha={self.settings.alpha})"
        else:
            best = members[int(np.argmin(adjusted))]
            reason = f"not tripped: smallest adjusted p={smallest:.3g} ({best}) >= alpha={self.settings.alpha} or effect too small"
        out.append(
            DriftResult(
                COMBINED_SIGNAL,
                "holm",
                None,
                smallest,
                None,
                prompt.effect if prompt else None,
                n_ref,
                n_cur,
                bool(tripped),
                reason=reason,
                p_method="holm",
                n_effective_ref=prompt.n_effective_ref if prompt else None,
                n_effective_cur=prompt.n_effective_cur if prompt else None,
                adjusted_p_value=smallest,
                min_detectable_shift=prompt.min_detectable_shift if prompt else None,
                details={"family": members, "tripped": tripped, "alpha": self.settings.alpha},
            )
        )
        return out

    def _vectors(self, field_name: str, rows: list[dict[str, Any]]) -> tuple[list[str], np.ndarray]:
        ids = [r["request_id"] for r in rows]
        return load_vectors(self.store, self.settings.embedding_model, field_name, ids)

    def _record(
        self, alias: str, reference: Reference, results: list[DriftResult], run_at: datetime
    ) -> None:
        for r in results:
            details = {"statistic": r.statistic, "effect": r.effect, **r.details}
            self.store.query(
                "INSERT INTO drift_runs (run_at, model_alias, signal, score, threshold, p_value,"
                " n_reference, n_current, drifted, reason, reference_id, details,"
                " n_effective_reference, n_effective_current, effect, p_method, adjusted_p_value,"
                " min_detectable_shift)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    run_at,
                    alias,
                    r.signal,
                    r.score,
                    r.threshold,
                    r.p_value,
                    r.n_ref,
                    r.n_cur,
                    r.drifted,
                    r.reason,
                    reference.id,
                    json.dumps(details),
                    r.n_effective_ref,
                    r.n_effective_cur,
                    r.effect,
                    r.p_method,
                    r.adjusted_p_value,
                    r.min_detectable_shift,
                ],
            )
            self._gauges(alias, r)

    def _gauges(self, alias: str, r: DriftResult) -> None:
        labels = {"signal": r.signal, "model": alias}
        self.metrics.window_samples.labels(**labels, window="reference").set(r.n_ref)
        self.metrics.window_samples.labels(**labels, window="current").set(r.n_cur)
        self.metrics.detected.labels(**labels).set(1 if r.drifted else 0)
        for gauge, value in (
            (self.metrics.score, r.score),
            (self.metrics.threshold, r.threshold),
            (self.metrics.p_value, r.p_value),
            (self.metrics.adjusted_p_value, r.adjusted_p_value),
            (self.metrics.min_detectable_shift, r.min_detectable_shift),
        ):
            if value is not None:
                gauge.labels(**labels).set(value)
        for window, value in (("reference", r.n_effective_ref), ("current", r.n_effective_cur)):
            if value is not None:
                self.metrics.effective_samples.labels(**labels, window=window).set(value)


def _has(column: str) -> Callable[[dict[str, Any]], bool]:
    """A row filter: the column is not NULL."""
    return lambda row: row[column] is not None
