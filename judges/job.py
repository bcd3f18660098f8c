"""The scheduled judging pass: sample new traffic per alias, judge it, store it, update gauges.

``driftloop.service`` wires it; one pass by hand is
``JudgeJob(Runner(store, JudgeMetrics(registry)), [judge], {judge.name: budget},
JudgeSettings(sample_rate=0.05), aliases=lambda: {"support"}).run()``.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from judges.budget import DailyBudget
from judges.judgments import append_judgments, window_means
from judges.metrics import JudgeMetrics
from judges.plugins import Judge
from judges.runner import Item, Runner
from judges.sampling import sample_unjudged

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class JudgeSettings:
    sample_rate: float = 0.02
    sample_rates: Mapping[str, float] = field(default_factory=dict)
    per_alias: int = 50  # exchanges judged per alias and pass, at most
    window_size: int = 200  # scored judgments behind the score-mean gauge


class JudgeJob:
    """One pass: every judge over the same deterministic sample of every configured alias."""

    def __init__(
        self,
        runner: Runner,
        judges: Sequence[Judge],
        budgets: Mapping[str, DailyBudget],
        settings: JudgeSettings,
        aliases: Callable[[], Iterable[str]],
    ) -> None:
        self.runner = runner
        self.judges = list(judges)
        self.budgets = dict(budgets)
        self.settings = settings
        self.aliases = aliases  # configured names only: metric labels stay bounded
        for judge in self.judges:
            runner.metrics.register_judge(judge.name)
        self._exhausted: set[str] = set()
        self.update_budget_gauges()

    @property
    def metrics(self) -> JudgeMetrics:
        return self.runner.metrics

    def run(self) -> dict[str, Counter[str]]:
        """Run one pass in this thread's own event loop (APScheduler calls it from a worker)."""
        return asyncio.run(self.run_async())

    async def run_async(self) -> dict[str, Counter[str]]:
        known = set(self.aliases())
        report: dict[str, Counter[str]] = {}
        for judge in self.judges:
            exchanges = sample_unjudged(
                self.runner.store,
                judge.name,
                known,
                self.settings.sample_rates,
                self.settings.sample_rate,
                self.settings.per_alias,
            )
            items = [Item(e.request_id, e.model_alias, e.prompt, e.response) for e in exchanges]
            judgments = await self.runner.judge_items(
                judge, items, source="traffic", budget=self.budgets.get(judge.name)
            )
            append_judgments(self.runner.store, judgments)
            report[judge.name] = Counter(
                "cached" if j.cached else j.verdict.outcome.value for j in judgments
            )
            self.update_window_gauges(judge.name, known)
            if judgments:
                log.info("judge %s: %s", judge.name, dict(report[judge.name]))
        self.update_budget_gauges()
        return report

    def update_window_gauges(self, judge: str, aliases: Iterable[str]) -> None:
        means = window_means(self.runner.store, judge, aliases, self.settings.window_size)
        for alias, (mean, count) in means.items():
            self.metrics.score_mean.labels(model=alias, judge=judge).set(mean)
            self.metrics.window_samples.labels(model=alias, judge=judge).set(count)

    def update_budget_gauges(self) -> None:
        for name, budget in self.budgets.items():
            exhausted = budget.exhausted()
            if exhausted and name not in self._exhausted:
                log.warning(
                    "judge %s stopped: today's budget is spent (%d/%d tokens, %d/%d requests)",
                    name,
                    budget.tokens,
                    budget.token_limit,
                    budget.requests,
                    budget.request_limit,
                )
            self._exhausted = (self._exhausted | {name}) if exhausted else self._exhausted - {name}
            self.metrics.budget_remaining.labels(judge=name).set(budget.remaining_tokens())
            self.metrics.budget_exhausted.labels(judge=name).set(int(exhausted))
