"""Judge drift: a fixed anchor set is re-judged on a schedule and its mean score compared with the
first run's (same judge, rubric version and anchor file). A judge model swapped or updated behind
the endpoint shows up as a shift although nothing about the traffic changed.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass

from judges.budget import DailyBudget
from judges.examples import Example
from judges.judgments import append_judgments
from judges.plugins import Judge
from judges.runner import Item, Runner

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class AnchorRun:
    n_items: int
    n_scored: int
    mean_score: float | None
    baseline: float | None
    shift: float | None
    drifted: bool
    reason: str


class AnchorJob:
    """Re-judges the anchor set (never from the cache), records the run, sets the shift gauge."""

    def __init__(
        self,
        runner: Runner,
        judge: Judge,
        examples: Sequence[Example],
        anchor_set: str,
        *,
        max_shift: float = 0.5,
        min_scored_share: float = 0.5,
        budget: DailyBudget | None = None,
    ) -> None:
        if not examples:
            raise ValueError("the anchor set is empty")
        self.runner = runner
        self.judge = judge
        self.examples = list(examples)
        self.anchor_set = anchor_set  # content hash of the anchor file
        self.max_shift = max_shift
        self.min_scored_share = min_scored_share
        self.budget = budget

    def run(self) -> AnchorRun | None:
        return asyncio.run(self.run_async())

    async def run_async(self) -> AnchorRun | None:
        if self.budget is not None and self.budget.exhausted():
            log.info("anchor run of %s skipped: today's judge budget is spent", self.judge.name)
            return None
        items = [Item(f"anchor:{e.id}", None, e.prompt, e.response) for e in self.examples]
        judgments = await self.runner.judge_items(
            self.judge, items, source="anchor", budget=self.budget, use_cache=False
        )
        append_judgments(self.runner.store, judgments)
        scores = [j.verdict.score for j in judgments if j.verdict.score is not None]
        run = self._compare(scores)
        self._record(run)
        if run.shift is not None:
            self.runner.metrics.anchor_shift.labels(judge=self.judge.name).set(run.shift)
        if run.drifted:
            log.warning("judge %s drifted on its anchor set: %s", self.judge.name, run.reason)
        else:
            log.info("judge %s anchor run: %s", self.judge.name, run.reason)
        return run

    def _compare(self, scores: list[float]) -> AnchorRun:
        n = len(self.examples)
        if len(scores) < self.min_scored_share * n:
            return AnchorRun(
                n,
                len(scores),
                None,
                None,
                None,
                False,
                f"insufficient: {len(scores)}/{n} anchors scored",
            )
        mean = sum(scores) / len(scores)
        baseline = self._baseline()
        if baseline is None:
            return AnchorRun(
                n, len(scores), mean, mean, 0.0, False, f"baseline set: mean {mean:.3f}"
            )
        shift = mean - baseline
        drifted = abs(shift) >= self.max_shift
        relation = ">=" if drifted else "<"
        return AnchorRun(
            n,
            len(scores),
            mean,
            baseline,
            shift,
            drifted,
            f"mean {mean:.3f} vs baseline {baseline:.3f}: |shift| {abs(shift):.3f} "
            f"{relation} {self.max_shift}",
        )

    def _baseline(self) -> float | None:
        rows = self.runner.store.query(
            "SELECT mean_score FROM judge_anchor_runs WHERE judge = ? AND rubric_version = ?"
            " AND anchor_set = ? AND mean_score IS NOT NULL ORDER BY id LIMIT 1",
            [self.judge.name, self.judge.version, self.anchor_set],
        )
        return float(rows[0][0]) if rows else None

    def _record(self, run: AnchorRun) -> None:
        self.runner.store.execute(
            "INSERT INTO judge_anchor_runs (run_at, judge, judge_model, rubric_version, anchor_set,"
            " n_scored, n_items, mean_score, baseline, shift, drifted, reason)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [
                self.runner.clock(),
                self.judge.name,
                self.judge.judge_model,
                self.judge.version,
                self.anchor_set,
                run.n_scored,
                run.n_items,
                run.mean_score,
                run.baseline,
                run.shift,
                run.drifted,
                run.reason,
            ],
        )
