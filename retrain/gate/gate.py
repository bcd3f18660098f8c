"""The golden-set regression gate: compare a candidate with production and the base, decide.

``decide`` compares the scores of ``retrain.gate.scores.evaluate_model`` per category and overall
under a ``GatePolicy``; ``run_gate`` scores each distinct model once and decides. Served names
are the registry's ``<alias>-v<N>`` (the base model serves under its own name).

Against a vLLM serving the base model and the candidate adapter (so not a doctest)::

    client = openai.OpenAI(base_url="http://127.0.0.1:8000/v1", api_key="-", max_retries=0)
    gs = load_golden_set("helpdesk")
    report = run_gate(
        client, gs, candidate="helpdesk-v1", production="smollm2", base="smollm2",
        policy=GatePolicy(drifted_categories=("tech_support",)), retry=RetryPolicy(),
    )
    report.passed, [r.message for r in report.reasons]
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

import openai

from judges.client import RetryPolicy
from retrain.gate.golden import GoldenSet
from retrain.gate.scores import FORMAT, OVERALL, GateError, ModelScores, evaluate_model


@dataclass(frozen=True)
class GatePolicy:
    """What "not worse" and "better" mean; metric values are in [0, 1], margins absolute.

    ``margin``: how far below production (or base) the candidate may fall on a primary metric,
    overall and in each category. ``min_improvement``: how much better than production the
    candidate must be, in every drifted category, on at least one of ``improvement_metrics``
    (default: the primary metrics). With no drifted category the improvement is asked of
    ``overall``.
    """

    margin: float = 0.05
    min_improvement: float = 0.10
    primary_metrics: tuple[str, ...] = (FORMAT, "token_f1", "rouge_l")
    drifted_categories: tuple[str, ...] = ()
    improvement_metrics: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        if not 0 <= self.margin < 1:
            raise ValueError(f"gate margin must be in [0, 1), got {self.margin}")
        if not 0 <= self.min_improvement <= 1:
            raise ValueError(f"gate min_improvement must be in [0, 1], got {self.min_improvement}")
        if not self.primary_metrics:
            raise ValueError("gate primary_metrics must name at least one metric")
        if self.improvement_metrics is not None and not self.improvement_metrics:
            raise ValueError("gate improvement_metrics must be None or name at least one metric")

    @property
    def improve_on(self) -> tuple[str, ...]:
        return self.improvement_metrics or self.primary_metrics


@dataclass(frozen=True)
class Check:
    """One comparison the gate made: scope (category or overall), metric, values, verdict."""

    kind: str  # "not_worse", "improves" or "judge" (the pairwise win rate, read as not_worse)
    scope: str
    metric: str
    candidate: float
    against: str  # "production", "base" or "production (= base)"
    baseline: float
    bar: float  # the value the candidate had to reach
    passed: bool

    @property
    def delta(self) -> float:
        return self.candidate - self.baseline

    @property
    def message(self) -> str:
        head = (
            f"{self.scope} {self.metric}: candidate {self.candidate:.3f} vs {self.against} "
            f"{self.baseline:.3f} ({self.delta:+.3f})"
        )
        if self.kind == "improves":
            verdict = "improved" if self.passed else "not improved"
            return f"{head}: {verdict}, needs ≥ {self.bar:.3f} (min improvement)"
        verdict = "within margin" if self.passed else "WORSE beyond margin"
        return f"{head}: {verdict}, needs ≥ {self.bar:.3f}"


@dataclass
class GateReport:
    """The decision with its reasons, every check, and the score table it came from."""

    passed: bool
    reasons: list[Check]
    checks: list[Check]
    table: list[dict[str, Any]]
    policy: GatePolicy
    candidate: ModelScores
    production: ModelScores
    base: ModelScores
    production_is_base: bool = False
    summary: str = field(default="")
    judge: dict[str, Any] = field(default_factory=dict)  # the LLM judge's status and verdicts

    def to_dict(self) -> dict[str, Any]:
        return {
            "passed": self.passed,
            "summary": self.summary,
            "reasons": [{**asdict(r), "message": r.message} for r in self.reasons],
            "checks": [{**asdict(c), "message": c.message} for c in self.checks],
            "table": self.table,
            "policy": asdict(self.policy),
            "production_is_base": self.production_is_base,
            "judge": self.judge,
            "models": {
                "candidate": self.candidate.to_dict(),
                "production": self.production.to_dict(),
                "base": self.base.to_dict(),
            },
        }


_Baseline = tuple[str, ModelScores]  # (label in messages, scores)


def _require_same_golden_set(candidate: ModelScores, others: Sequence[ModelScores]) -> None:
    """Raise GateError unless every model was scored on the candidate's golden set."""
    for other in others:
        if other.golden_sha256 != candidate.golden_sha256:
            raise GateError(
                f"{other.model!r} was scored on {other.golden} ({other.golden_sha256[:12]}) but "
                f"the candidate on {candidate.golden} ({candidate.golden_sha256[:12]}): the gate "
                "compares scores on the same golden set only"
            )


def _require_known_names(candidate: ModelScores, policy: GatePolicy) -> None:
    """Raise GateError when the policy names a metric or drifted category the scores lack."""
    known = set(candidate.overall)
    unknown = sorted({*policy.primary_metrics, *policy.improve_on} - known)
    if unknown:
        raise GateError(f"gate policy names unknown metric(s) {unknown}; known: {sorted(known)}")
    missing = sorted(set(policy.drifted_categories) - set(candidate.categories))
    if missing:
        raise GateError(
            f"drifted categories {missing} are not in {candidate.golden} "
            f"(categories: {sorted(candidate.categories)})"
        )


def _baselines(production: ModelScores, base: ModelScores) -> tuple[bool, list[_Baseline]]:
    """Return whether production is the base, and the models the candidate must not fall below."""
    production_is_base = production is base or production.model == base.model
    if production_is_base:
        return True, [("production (= base)", production)]
    return False, [("production", production), ("base", base)]


def _not_worse_checks(
    candidate: ModelScores, baselines: Sequence[_Baseline], policy: GatePolicy
) -> list[Check]:
    """Compare the candidate with each baseline on every primary metric, overall and per category."""
    checks: list[Check] = []
    for scope in [OVERALL, *sorted(candidate.categories)]:
        for metric in policy.primary_metrics:
            cand = candidate.value(scope, metric)
            for label, other in baselines:
                ref = other.value(scope, metric)
                if cand is None or ref is None:
                    continue  # the metric is not defined here (no must_match in the category)
                bar = ref - policy.margin
                checks.append(Check("not_worse", scope, metric, cand, label, ref, bar, cand >= bar))
    return checks


def _improvement_checks(
    candidate: ModelScores, production: ModelScores, label: str, policy: GatePolicy
) -> list[Check]:
    """Return, per drifted category (or overall), the best improvement over production found."""
    best_checks: list[Check] = []
    for scope in policy.drifted_categories or (OVERALL,):
        options = []
        for metric in policy.improve_on:
            cand, ref = candidate.value(scope, metric), production.value(scope, metric)
            if cand is None or ref is None:
                continue
            bar = ref + policy.min_improvement
            # A tiny epsilon so that 0.1 + 0.2-style float sums do not fail an exact bar.
            options.append(
                Check("improves", scope, metric, cand, label, ref, bar, cand >= bar - 1e-9)
            )
        if not options:
            raise GateError(
                f"no improvement metric of {list(policy.improve_on)} is defined on {scope}"
            )
        best_checks.append(max(options, key=lambda c: (c.passed, c.delta)))
    return best_checks


def _verdict(
    checks: Sequence[Check],
    improvements: list[Check],
    baselines: Sequence[_Baseline],
    policy: GatePolicy,
) -> tuple[bool, list[Check], str]:
    """Return passed, the reasons (improvements, or the failed checks) and a one-line summary."""
    failed = [c for c in checks if not c.passed]
    if not failed:
        summary = (
            f"passed: improved {', '.join(f'{c.scope} {c.metric}' for c in improvements)}; not "
            f"worse than {' or '.join(label for label, _ in baselines)} in "
            f"{sum(c.kind == 'not_worse' for c in checks)} checks (margin {policy.margin})"
        )
        return True, improvements, summary
    summary = f"rejected: {len(failed)} failed check(s): " + "; ".join(c.message for c in failed)
    return False, failed, summary


class GateJudge(Protocol):
    """The LLM judge's say: a check that counts, or None (not trusted), and its status."""

    def __call__(
        self, candidate: ModelScores, production: ModelScores
    ) -> tuple[Check | None, dict[str, Any]]: ...


def decide(
    candidate: ModelScores,
    production: ModelScores,
    base: ModelScores,
    policy: GatePolicy,
    judge: GateJudge | None = None,
) -> GateReport:
    """Ship only if not worse than production and base everywhere, and better where drifted;
    with a trusted ``judge``, also only if the judge does not prefer production."""
    _require_same_golden_set(candidate, (production, base))
    _require_known_names(candidate, policy)
    production_is_base, baselines = _baselines(production, base)
    checks = _not_worse_checks(candidate, baselines, policy)
    improvements = _improvement_checks(candidate, production, baselines[0][0], policy)
    checks.extend(improvements)
    judge_check, judge_status = judge(candidate, production) if judge else (None, {})
    if judge_check is not None:
        checks.append(judge_check)
    passed, reasons, summary = _verdict(checks, improvements, baselines, policy)
    return GateReport(
        passed=passed,
        reasons=reasons,
        checks=checks,
        table=score_table(candidate, production, base),
        policy=policy,
        candidate=candidate,
        production=production,
        base=base,
        production_is_base=production_is_base,
        summary=summary,
        judge=judge_status,
    )


def score_table(
    candidate: ModelScores, production: ModelScores, base: ModelScores
) -> list[dict[str, Any]]:
    """One row per (scope, metric): candidate, production and base means side by side."""
    rows = []
    for scope in [OVERALL, *sorted(candidate.categories)]:
        for metric in candidate.overall:
            values = {
                "candidate": candidate.value(scope, metric),
                "production": production.value(scope, metric),
                "base": base.value(scope, metric),
            }
            if all(v is None for v in values.values()):
                continue
            n = sum(candidate.counts.values()) if scope == OVERALL else candidate.counts[scope]
            rows.append({"scope": scope, "metric": metric, "n": n, **values})
    return rows


def run_gate(
    client: openai.OpenAI,
    golden_set: GoldenSet,
    *,
    candidate: str,
    production: str,
    base: str,
    policy: GatePolicy,
    max_tokens: int = 64,
    concurrency: int = 8,
    retry: RetryPolicy | None = None,
    judge: GateJudge | None = None,
) -> GateReport:
    """Evaluate each distinct model once (production may be the base) and decide."""

    def evaluate(model: str) -> ModelScores:
        return evaluate_model(
            client, model, golden_set, max_tokens=max_tokens, concurrency=concurrency, retry=retry
        )

    prod = evaluate(production)
    base_scores = prod if base == production else evaluate(base)
    return decide(evaluate(candidate), prod, base_scores, policy, judge)
