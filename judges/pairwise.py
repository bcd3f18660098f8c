"""A pairwise judge: which of two answers to one prompt is better, asked in both orders.

LLM judges prefer whichever answer they read first (or second) more often than the answers
deserve. Every pair is therefore judged twice, once in each order; the verdict counts only when
both orders agree, a disagreement counts as a tie, and the share of agreeing pairs is reported
as the judge's position-swap consistency.

>>> parse_preference('{"winner": "B", "reason": "shorter"}'), parse_preference("tie."), parse_preference("?")
('B', 'tie', None)
"""

from __future__ import annotations

import asyncio
import re
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from judges.client import ChatCallError, ChatClient, Endpoint
from judges.rubric import Rubric

_JSON_WINNER = re.compile(r'"winner"\s*:\s*"(A|B|tie)"', re.IGNORECASE)
_BARE_WINNER = re.compile(r"^\W*(A|B|tie)\b", re.IGNORECASE)
MAX_INPUT_CHARS = 2000


def parse_preference(text: str | None) -> str | None:
    """'A', 'B' or 'tie' from a verdict (JSON ``winner`` or a bare first word); None if neither."""
    if not text:
        return None
    match = _JSON_WINNER.search(text) or _BARE_WINNER.search(text)
    if match is None:
        return None
    found = match.group(1)
    return "tie" if found.lower() == "tie" else found.upper()


@dataclass(frozen=True)
class Pair:
    prompt: str
    candidate: str
    production: str


@dataclass
class PairwiseResult:
    """Candidate vs production over many prompts, from the candidate's side."""

    outcomes: Counter[str] = field(default_factory=Counter)  # win, loss, tie, unparsed
    consistent: int = 0  # pairs whose two orders agreed
    tokens: int = 0

    @property
    def judged(self) -> int:
        return self.outcomes["win"] + self.outcomes["loss"] + self.outcomes["tie"]

    @property
    def win_rate(self) -> float | None:
        """Wins plus half the ties over the judged pairs (0.5: no better, no worse)."""
        if not self.judged:
            return None
        return (self.outcomes["win"] + 0.5 * self.outcomes["tie"]) / self.judged

    @property
    def consistency(self) -> float | None:
        return self.consistent / self.judged if self.judged else None

    def to_dict(self) -> dict[str, Any]:
        return {
            "outcomes": dict(sorted(self.outcomes.items())),
            "win_rate": self.win_rate,
            "position_consistency": self.consistency,
            "tokens": self.tokens,
        }


class PairwiseJudge:
    """Asks a chat model which answer better meets the rubric's task; see the module docstring."""

    def __init__(
        self,
        rubric: Rubric,
        endpoint: Endpoint,
        *,
        max_tokens: int = 48,
        concurrency: int = 4,
        client_factory: Callable[[Endpoint], ChatClient] = ChatClient,
    ) -> None:
        self.rubric = rubric
        self.endpoint = endpoint
        self.max_tokens = max_tokens
        self.concurrency = concurrency
        self._client_factory = client_factory

    def messages(self, prompt: str, first: str, second: str) -> list[dict[str, str]]:
        system = (
            f"You compare two answers to the same request. Task: {self.rubric.task}\n"
            f"{self.rubric.instructions}\n"
            'Reply with JSON only: {"winner": "A"} or {"winner": "B"}, or {"winner": "tie"}'
            " when neither is better."
        )
        user = (
            f"Request:\n{prompt[:MAX_INPUT_CHARS]}\n\nAnswer A:\n{first[:MAX_INPUT_CHARS]}"
            f"\n\nAnswer B:\n{second[:MAX_INPUT_CHARS]}"
        )
        return [{"role": "system", "content": system}, {"role": "user", "content": user}]

    def compare(self, pairs: Sequence[Pair]) -> PairwiseResult:
        """Judge every pair in both orders (blocking; runs its own event loop)."""
        return asyncio.run(self._compare(pairs))

    async def _compare(self, pairs: Sequence[Pair]) -> PairwiseResult:
        result = PairwiseResult()
        gate = asyncio.Semaphore(self.concurrency)
        async with self._client_factory(self.endpoint) as client:

            async def ask(prompt: str, first: str, second: str) -> str | None:
                async with gate:
                    try:
                        answer = await client.chat(
                            self.messages(prompt, first, second), max_tokens=self.max_tokens
                        )
                    except ChatCallError:
                        return None
                result.tokens += answer.prompt_tokens + answer.completion_tokens
                return parse_preference(answer.text)

            async def one(pair: Pair) -> None:
                candidate_first, production_first = await asyncio.gather(
                    ask(pair.prompt, pair.candidate, pair.production),
                    ask(pair.prompt, pair.production, pair.candidate),
                )
                if candidate_first is None or production_first is None:
                    result.outcomes["unparsed"] += 1
                    return
                as_candidate = {"A": "win", "B": "loss", "tie": "tie"}
                swapped = {"A": "loss", "B": "win", "tie": "tie"}
                first, second = as_candidate[candidate_first], swapped[production_first]
                if first == second:
                    result.consistent += 1
                    result.outcomes[first] += 1
                else:
                    result.outcomes["tie"] += 1  # the order decided, not the answers

            await asyncio.gather(*(one(p) for p in pairs))
        return result
