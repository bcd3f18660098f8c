"""Teacher labels for the traffic that drifted: ask a model that behaves as the house wants.

On a drift trigger the loop has prompts (the drifted requests the drift job recorded: members of
clusters that grew, and prompts unlike any of the reference) but no answers it may train on. A
teacher, any OpenAI-compatible endpoint, answers them under a system prompt stating the house policy and optional few-shot examples. By default
it is the served base model itself: the adapter then learns to behave as the prompted model does
without the prompt (context distillation); a stronger endpoint is one config change.

Every answer passes the same checks before it becomes a ``teacher`` example: the rule judges
(refusal, empty, length, ...), the house format (``format_pattern``) and, when configured, the
LLM judge (``TeacherJudge``), which is asked only while its calibration on record meets the bar:
an untrusted judge would filter on noise, so the run then says "not used" and why. Every call is a
``teacher_calls`` row (tokens, attempts, seconds, outcome, reason), which is also where the daily
budget is read back from after a restart. Writes only ``teacher_calls``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from datetime import time as day_start
from typing import Any

from judges.budget import DailyBudget, Spent
from judges.calibration_records import judge_trust
from judges.client import ChatCallError, ChatClient, Endpoint
from judges.llm import RubricJudge
from judges.plugins import Judge
from judges.verdict import SCALE_MAX
from monitor.store import Store
from retrain.data.dedupe import normalise

ACCEPTED = "accepted"
BUDGET = "budget"  # not asked: the day's budget was spent
FORMAT = "format"
JUDGE = "judge"  # the LLM judge scored it below the bar (or gave no score)


@dataclass(frozen=True)
class TeacherSettings:
    """Who the teacher is, what policy it follows, and how much of it a run may use."""

    endpoint: Endpoint
    system_prompt: str
    examples: tuple[tuple[str, str], ...] = ()  # few-shot (prompt, answer) pairs, in order
    format_pattern: str | None = None  # every accepted answer matches it (the house format)
    max_tokens: int = 128
    concurrency: int = 4
    max_prompts: int = 200  # drifted prompts asked per run, at most

    def __post_init__(self) -> None:
        if not self.system_prompt.strip():
            raise ValueError("the teacher needs a system prompt stating the house policy")
        if self.format_pattern is not None:
            re.compile(self.format_pattern)  # re.error names the problem
        if self.max_tokens < 1 or self.concurrency < 1 or self.max_prompts < 1:
            raise ValueError("teacher max_tokens, concurrency and max_prompts must be >= 1")

    def messages(self, prompt: str) -> list[dict[str, str]]:
        """The conversation the teacher answers: policy, few-shot turns, then the prompt."""
        out = [{"role": "system", "content": self.system_prompt}]
        for shot_prompt, shot_answer in self.examples:
            out += [
                {"role": "user", "content": shot_prompt},
                {"role": "assistant", "content": shot_answer},
            ]
        return [*out, {"role": "user", "content": prompt}]


@dataclass(frozen=True)
class TeacherJudge:
    """The LLM judge a teacher answer must also satisfy: a score of at least ``min_score``."""

    judge: RubricJudge  # its name, model and rubric version key its calibration
    min_score: float
    min_kappa: float
    min_parsed: float

    def trusted(self, store: Store) -> tuple[bool, str]:
        """Whether the calibration on record lets this judge filter, and the sentence saying so."""
        trust = judge_trust(
            store,
            self.judge.name,
            self.judge.endpoint.model,
            self.judge.version,
            min_kappa=self.min_kappa,
            min_parsed=self.min_parsed,
        )
        return trust.trusted, trust.why


@dataclass
class TeacherLabels:
    """What one run got from the teacher: the accepted examples and every count behind them."""

    examples: list[dict[str, Any]] = field(default_factory=list)
    outcomes: Counter[str] = field(default_factory=Counter)  # accepted, or why not
    prompts: int = 0  # drifted prompts found (after de-duplication)
    calls: int = 0  # HTTP attempts
    tokens: int = 0
    seconds: float = 0.0
    judge: str | None = None  # the LLM judge's status ("used: ..." / "not used: ..."), if configured
    judge_tokens: int = 0

    @property
    def acceptance(self) -> float:
        asked = sum(n for reason, n in self.outcomes.items() if reason != BUDGET)
        return self.outcomes[ACCEPTED] / asked if asked else 0.0

    def summary(self) -> dict[str, Any]:
        """For the dataset manifest and the run's timeline."""
        return {
            "prompts": self.prompts,
            "calls": self.calls,
            "tokens": self.tokens,
            "seconds": round(self.seconds, 2),
            "acceptance": round(self.acceptance, 4),
            "outcomes": dict(sorted(self.outcomes.items())),
            **({"judge": self.judge, "judge_tokens": self.judge_tokens} if self.judge else {}),
        }

    def note(self) -> str:
        reasons = ", ".join(f"{r} {n}" for r, n in sorted(self.outcomes.items()))
        return (
            f"teacher: {self.prompts} drifted prompts, {self.calls} calls, {self.tokens} tokens,"
            f" {self.seconds:.1f} s; accepted {self.outcomes[ACCEPTED]}"
            f" ({self.acceptance:.0%}); by outcome: {reasons or 'none'}"
            + (f"; LLM judge {self.judge}" if self.judge else "")
        )


class Teacher:
    """Labels drifted prompts for one alias's retrain run; see the module docstring."""

    def __init__(
        self,
        store: Store,
        settings: TeacherSettings,
        rules: Sequence[Judge],
        budget: DailyBudget,
        *,
        judge: TeacherJudge | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.store = store
        self.settings = settings
        self.rules = list(rules)
        self.budget = budget
        self.judge = judge
        self.clock = clock
        self._format = re.compile(settings.format_pattern) if settings.format_pattern else None

    @property
    def model(self) -> str:
        return self.settings.endpoint.model

    # --- which prompts ------------------------------------------------------------------------

    def drifted_prompts(self, drift_run_id: int) -> list[tuple[str, str]]:
        """(request id, prompt) the evaluation found drifted, de-duplicated, capped.

        ``drift_run_id`` is any row of the evaluation (the trigger's is the alias's decision).
        """
        rows = self.store.query(
            "SELECT p.details FROM drift_runs d JOIN drift_runs p"
            " ON p.run_at = d.run_at AND p.model_alias = d.model_alias"
            " WHERE d.id = ? AND p.signal = 'prompt_embedding'",
            [drift_run_id],
        )
        ids = json.loads(rows[0][0]).get("drifted_request_ids", []) if rows else []
        if not ids:
            return []
        found = dict(
            self.store.query(
                "SELECT request_id, prompt_text FROM requests"
                " WHERE list_contains(?, request_id) AND coalesce(prompt_text, '') <> ''",
                [ids],
            )
        )
        seen: set[str] = set()
        out = []
        for request_id in ids:  # least like the reference first, as the drift job ranked them
            prompt = found.get(request_id)
            if prompt is None or (key := normalise(prompt)) in seen:
                continue
            seen.add(key)
            out.append((request_id, prompt))
        return out[: self.settings.max_prompts]

    def available(self, alias: str) -> int:
        """Distinct drifted prompts the newest evaluation of ``alias`` left for a teacher."""
        rows = self.store.query(
            "SELECT id FROM drift_runs WHERE model_alias = ? AND signal = 'prompt_embedding'"
            " ORDER BY run_at DESC, id DESC LIMIT 1",
            [alias],
        )
        return len(self.drifted_prompts(int(rows[0][0]))) if rows else 0

    # --- labelling ----------------------------------------------------------------------------

    def label(self, alias: str, run_id: str, drift_run_id: int) -> TeacherLabels:
        """Ask the teacher about every drifted prompt (within budget); keep what passes."""
        labels = TeacherLabels()
        prompts = self.drifted_prompts(drift_run_id)
        labels.prompts = len(prompts)
        judge = None
        if self.judge is not None:
            trusted, labels.judge = self.judge.trusted(self.store)
            judge = self.judge if trusted else None
        started = time.perf_counter()
        if prompts:
            asyncio.run(self._label_all(alias, run_id, prompts, labels, judge))
        labels.seconds = time.perf_counter() - started
        return labels

    async def _label_all(
        self,
        alias: str,
        run_id: str,
        prompts: list[tuple[str, str]],
        labels: TeacherLabels,
        judge: TeacherJudge | None,
    ) -> None:
        gate = asyncio.Semaphore(self.settings.concurrency)
        async with contextlib.AsyncExitStack() as stack:
            client = await stack.enter_async_context(ChatClient(self.settings.endpoint))
            if judge is not None:  # one judge client for the whole run
                await stack.enter_async_context(judge.judge.session())

            async def one(request_id: str, prompt: str) -> None:
                async with gate:
                    await self._label_one(
                        client, alias, run_id, request_id, prompt, labels, judge
                    )

            await asyncio.gather(*(one(rid, prompt) for rid, prompt in prompts))

    async def _label_one(
        self,
        client: ChatClient,
        alias: str,
        run_id: str,
        request_id: str,
        prompt: str,
        labels: TeacherLabels,
        judge: TeacherJudge | None,
    ) -> None:
        if not self.budget.reserve():
            labels.outcomes[BUDGET] += 1
            return
        started = time.perf_counter()
        try:
            result = await client.chat(
                self.settings.messages(prompt), max_tokens=self.settings.max_tokens
            )
        except ChatCallError as exc:
            self.budget.spend(0, extra_requests=exc.attempts - 1)
            labels.calls += exc.attempts
            reason = f"error:{exc.kind}"
            self._record(alias, run_id, request_id, reason, str(exc), 0, 0, exc.attempts, started)
            labels.outcomes[reason] += 1
            return
        tokens = result.prompt_tokens + result.completion_tokens
        self.budget.spend(tokens, extra_requests=result.attempts - 1)
        labels.calls += result.attempts
        labels.tokens += tokens
        answer = (result.text or "").strip()
        outcome, why = await self._check(prompt, answer, judge, labels)
        self._record(
            alias,
            run_id,
            request_id,
            outcome,
            why,
            result.prompt_tokens,
            result.completion_tokens,
            result.attempts,
            started,
        )
        labels.outcomes[outcome] += 1
        if outcome == ACCEPTED:
            labels.examples.append(
                {
                    "messages": [
                        {"role": "user", "content": prompt},
                        {"role": "assistant", "content": answer},
                    ],
                    "source": "teacher",
                    "ref": request_id,
                }
            )

    async def _check(
        self, prompt: str, answer: str, judge: TeacherJudge | None, labels: TeacherLabels
    ) -> tuple[str, str]:
        """(``accepted`` or the failed check's name, why): the rule judges (each must give its
        top score), the house format, then the LLM judge when it is trusted (the costly one
        last, so it only sees answers every free check passed)."""
        for rule in self.rules:
            verdict = await rule.evaluate(prompt, answer)
            if verdict.score is None or verdict.score < SCALE_MAX:
                return rule.kind, verdict.reason
        if self._format is not None and not self._format.search(answer):
            return FORMAT, f"no match for {self._format.pattern!r}"
        if judge is not None:
            verdict = await judge.judge.evaluate(prompt, answer)
            labels.judge_tokens += verdict.tokens
            if verdict.score is None:
                return JUDGE, f"no score from the judge ({verdict.outcome.value}): {verdict.reason}"
            if verdict.score < judge.min_score:
                return JUDGE, f"judge score {verdict.score:g} < {judge.min_score:g}: {verdict.reason}"
        return ACCEPTED, ""

    def _record(
        self,
        alias: str,
        run_id: str,
        request_id: str,
        outcome: str,
        reason: str,
        prompt_tokens: int,
        completion_tokens: int,
        attempts: int,
        started: float,
    ) -> None:
        self.store.execute(
            "INSERT INTO teacher_calls (called_at, model_alias, run_id, teacher, request_id,"
            " outcome, reason, prompt_tokens, completion_tokens, attempts, seconds)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [
                self.clock(),
                alias,
                run_id,
                self.model,
                request_id,
                outcome,
                reason[:500],
                prompt_tokens,
                completion_tokens,
                attempts,
                round(time.perf_counter() - started, 4),
            ],
        )


def teacher_spent(store: Store, teacher: str) -> Callable[[date], Spent]:
    """Tokens and HTTP attempts the teacher's calls recorded on a UTC day (the budget's memory)."""

    def spent(day: date) -> Spent:
        start = datetime.combine(day, day_start.min, tzinfo=UTC)
        [(tokens, attempts)] = store.query(
            "SELECT coalesce(sum(prompt_tokens + completion_tokens), 0), coalesce(sum(attempts), 0)"
            " FROM teacher_calls WHERE teacher = ? AND called_at >= ?",
            [teacher, start],
        )
        return int(tokens), int(attempts)

    return spent
