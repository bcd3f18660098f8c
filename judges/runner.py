"""Judge a batch of exchanges with one judge: cache, budget, concurrency, metrics.

Shared by the traffic job and the anchor job. A judge that fails (unreachable, timeout, crash)
yields an ``error`` verdict for that item; nothing here raises because a judge misbehaved.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from judges.budget import DailyBudget
from judges.judgments import Judgment, cached_verdicts, content_hash
from judges.metrics import JudgeMetrics, Outcome
from judges.plugins import Judge
from judges.verdict import Verdict
from monitor.store import Store

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Item:
    """One exchange to judge: a captured request or an anchor example."""

    request_id: str
    model_alias: str | None
    prompt: str
    response: str


@dataclass
class Runner:
    """Runs one judge over items with a concurrency limit, a budget and the content-hash cache."""

    store: Store
    metrics: JudgeMetrics
    concurrency: int = 4
    clock: Callable[[], datetime] = lambda: datetime.now(UTC)

    async def judge_items(
        self,
        judge: Judge,
        items: Sequence[Item],
        *,
        source: str,
        budget: DailyBudget | None = None,
        use_cache: bool = True,
    ) -> list[Judgment]:
        """A judgment for every item, in order; identical pairs are evaluated once."""
        hashes = [
            content_hash(i.prompt, i.response, judge.name, judge.version, judge.judge_model)
            for i in items
        ]
        cached = cached_verdicts(self.store, hashes) if use_cache else {}
        unique: dict[str, Item] = {}
        for item, h in zip(items, hashes, strict=True):
            if h not in cached:
                unique.setdefault(h, item)
        semaphore = asyncio.Semaphore(self.concurrency)
        fresh: dict[str, Verdict] = {}
        if unique:
            async with judge.session():
                verdicts = await asyncio.gather(
                    *(self._one(judge, item, semaphore, budget) for item in unique.values())
                )
            fresh = dict(zip(unique, verdicts, strict=True))
        out = []
        for item, h in zip(items, hashes, strict=True):
            # The first occurrence of a fresh hash carries the cost; repeats are cache hits.
            is_fresh = h in fresh and unique.get(h) is item
            verdict = fresh[h] if is_fresh else (cached.get(h) or fresh[h])
            if not is_fresh:
                self.metrics.count(judge.name, Outcome.CACHED)
            out.append(
                Judgment(
                    item.request_id,
                    source,
                    item.model_alias,
                    judge.name,
                    judge.version,
                    h,
                    verdict,
                    self.clock(),
                    cached=not is_fresh,
                )
            )
        return out

    async def _one(
        self, judge: Judge, item: Item, semaphore: asyncio.Semaphore, budget: DailyBudget | None
    ) -> Verdict:
        async with semaphore:
            if budget is not None and not budget.reserve():
                verdict = Verdict(
                    Outcome.BUDGET_EXHAUSTED,
                    reason=f"daily budget spent: {budget.tokens}/{budget.token_limit} tokens, "
                    f"{budget.requests}/{budget.request_limit} requests",
                    judge_model=judge.judge_model,
                )
                self.metrics.count(judge.name, verdict.outcome)
                return verdict
            started = time.perf_counter()
            try:
                verdict = await judge.evaluate(item.prompt, item.response)
            except Exception as exc:  # a judge bug must not stop the pass or the service
                log.exception("judge %s crashed on %s", judge.name, item.request_id)
                verdict = Verdict(Outcome.ERROR, reason=f"judge crashed: {exc!r}"[:500])
            if judge.uses_budget:
                self.metrics.request_duration.labels(judge=judge.name).observe(
                    time.perf_counter() - started
                )
            if budget is not None:
                budget.spend(verdict.tokens, extra_requests=max(0, verdict.attempts - 1))
            self.metrics.tokens.labels(judge=judge.name).inc(verdict.tokens)
            self.metrics.count(judge.name, verdict.outcome)
            return verdict
