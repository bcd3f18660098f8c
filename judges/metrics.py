"""Prometheus metrics of the judges: window score means, outcomes, tokens, budget, anchor shift.

Labels are bounded: ``model`` is a configured alias (or ``other``), ``judge`` a registered judge
name from configuration, ``outcome`` one of the ``Outcome`` values.
"""

from __future__ import annotations

from enum import StrEnum

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

DURATION_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)


class Outcome(StrEnum):
    """What became of one evaluation; ``cached`` is counted but never stored as a new row."""

    SCORED = "scored"
    UNPARSEABLE = "unparseable"
    ERROR = "error"
    BUDGET_EXHAUSTED = "budget_exhausted"
    CACHED = "cached"


class JudgeMetrics:
    """All judge metrics, registered on the registry passed in (tests use a fresh one)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.score_mean = Gauge(
            "driftloop_judge_score_mean",
            "Mean 1-5 judge score over the latest window of scored judgments.",
            ["model", "judge"],
            registry=registry,
        )
        self.window_samples = Gauge(
            "driftloop_judge_window_samples",
            "Scored judgments in the latest window behind the score mean.",
            ["model", "judge"],
            registry=registry,
        )
        self.evaluations = Counter(
            "driftloop_judge_evaluations_total",
            "Judge evaluations by outcome (scored, unparseable, error, budget_exhausted, cached).",
            ["judge", "outcome"],
            registry=registry,
        )
        self.tokens = Counter(
            "driftloop_judge_tokens_total",
            "Prompt plus completion tokens spent by the judge model.",
            ["judge"],
            registry=registry,
        )
        self.budget_remaining = Gauge(
            "driftloop_judge_budget_remaining_tokens",
            "Tokens left in today's (UTC) judge budget.",
            ["judge"],
            registry=registry,
        )
        self.budget_exhausted = Gauge(
            "driftloop_judge_budget_exhausted",
            "1 while today's token or request budget is spent and judging is stopped.",
            ["judge"],
            registry=registry,
        )
        self.request_duration = Histogram(
            "driftloop_judge_request_duration_seconds",
            "Time for one judge call, retries and backoff included.",
            ["judge"],
            buckets=DURATION_BUCKETS,
            registry=registry,
        )
        self.anchor_shift = Gauge(
            "driftloop_judge_anchor_shift",
            "Mean score on the fixed anchor set minus its first (baseline) mean.",
            ["judge"],
            registry=registry,
        )

    def register_judge(self, judge: str) -> None:
        """Export zero series for a configured judge so alerts and dashboards see every outcome."""
        for outcome in Outcome:
            self.evaluations.labels(judge=judge, outcome=outcome.value)
        self.tokens.labels(judge=judge)
        self.budget_exhausted.labels(judge=judge).set(0)

    def count(self, judge: str, outcome: Outcome, n: int = 1) -> None:
        self.evaluations.labels(judge=judge, outcome=outcome.value).inc(n)
