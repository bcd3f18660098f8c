"""Rule judges: cheap checks that need no model. A pass scores 5, a failure 1, the reason says why.

>>> import asyncio
>>> asyncio.run(RefusalJudge().evaluate("Help me", "I'm sorry, I can't help with that.")).score
1.0
"""

from __future__ import annotations

import hashlib
import json
import re
from abc import abstractmethod
from typing import Any

from judges.metrics import Outcome
from judges.plugins import Judge, register_judge
from judges.verdict import SCALE_MAX, SCALE_MIN, Verdict

PASS, FAIL = float(SCALE_MAX), float(SCALE_MIN)
REFUSAL = re.compile(
    r"\b(I'?m sorry, but|I am sorry, but|I'?m sorry, I can|I can(?:no|')t (?:help|assist|do|"
    r"provide|comply)|I am unable to|I'm unable to|I won'?t be able to|As an AI(?: language model)?)\b",
    re.IGNORECASE,
)
FENCE = re.compile(r"^```[a-zA-Z]*\s*\n(.*)\n```\s*$", re.DOTALL)


def _version(kind: str, params: dict[str, Any]) -> str:
    """Parameters are the rule's 'rubric': a changed pattern must not reuse cached verdicts."""
    blob = json.dumps([kind, params], sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:12]


class RuleJudge(Judge):
    """A judge whose verdict is a pure function of the response text."""

    def __init__(self, **params: Any) -> None:
        super().__init__(self.kind, _version(self.kind, params))

    async def evaluate(self, prompt: str, response: str) -> Verdict:
        failure = self.check(prompt, response)
        if failure is None:
            return Verdict(Outcome.SCORED, PASS, "pass")
        return Verdict(Outcome.SCORED, FAIL, failure)

    @abstractmethod
    def check(self, prompt: str, response: str) -> str | None:
        """``None`` when the response passes, else the reason it fails."""


@register_judge("refusal")
class RefusalJudge(RuleJudge):
    """Fails answers that refuse ("I'm sorry, but I can't help with that")."""

    def __init__(self) -> None:
        super().__init__()

    def check(self, prompt: str, response: str) -> str | None:
        match = REFUSAL.search(response)
        return f"refusal: {match.group(0)!r}" if match else None


@register_judge("empty")
class EmptyJudge(RuleJudge):
    """Fails answers with no visible text."""

    def __init__(self) -> None:
        super().__init__()

    def check(self, prompt: str, response: str) -> str | None:
        return None if response.strip() else "empty response"


@register_judge("json_valid")
class JsonValidJudge(RuleJudge):
    """Fails answers that are not one JSON document (optionally inside a ``` fence)."""

    def __init__(self, allow_fence: bool = True) -> None:
        if not isinstance(allow_fence, bool):
            raise ValueError(f"allow_fence must be true or false, got {allow_fence!r}")
        self.allow_fence = allow_fence
        super().__init__(allow_fence=allow_fence)

    def check(self, prompt: str, response: str) -> str | None:
        text = response.strip()
        fenced = FENCE.match(text) if self.allow_fence else None
        try:
            json.loads(fenced.group(1) if fenced else text)
        except json.JSONDecodeError as exc:
            return f"invalid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
        return None


@register_judge("regex")
class RegexJudge(RuleJudge):
    """Fails answers that do not match ``pattern`` (or that do, with ``must_match = false``)."""

    def __init__(self, pattern: str, must_match: bool = True) -> None:
        if not isinstance(pattern, str) or not pattern:
            raise ValueError("pattern must be a non-empty regular expression")
        try:
            self.regex = re.compile(pattern)
        except re.error as exc:
            raise ValueError(
                f"pattern {pattern!r} is not a valid regular expression: {exc}"
            ) from None
        self.must_match = bool(must_match)
        super().__init__(pattern=pattern, must_match=self.must_match)

    def check(self, prompt: str, response: str) -> str | None:
        found = self.regex.search(response) is not None
        if found == self.must_match:
            return None
        return (
            f"{'no match for' if self.must_match else 'forbidden match of'} {self.regex.pattern!r}"
        )


@register_judge("length")
class LengthJudge(RuleJudge):
    """Fails answers shorter than ``min_chars`` or longer than ``max_chars`` characters."""

    def __init__(self, min_chars: int = 1, max_chars: int = 8000) -> None:
        if not isinstance(min_chars, int) or not isinstance(max_chars, int) or min_chars < 0:
            raise ValueError("min_chars and max_chars must be non-negative integers")
        if max_chars < min_chars:
            raise ValueError(f"max_chars {max_chars} is below min_chars {min_chars}")
        self.min_chars, self.max_chars = min_chars, max_chars
        super().__init__(min_chars=min_chars, max_chars=max_chars)

    def check(self, prompt: str, response: str) -> str | None:
        n = len(response)
        if n < self.min_chars:
            return f"{n} characters, fewer than {self.min_chars}"
        if n > self.max_chars:
            return f"{n} characters, more than {self.max_chars}"
        return None
