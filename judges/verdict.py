"""What a judge returns, and robust parsing of an LLM judge's verdict text into a 1-5 score.

An answer that cannot be read as exactly one integer on the scale is *unparseable*: it is recorded
as such with the reason, never guessed into a score.

>>> parse_verdict('```json\\n{"score": 4, "reason": "correct"}\\n```')
ParsedVerdict(score=4, reason='correct')
>>> parse_verdict("Score: 9/10").score is None
True
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from typing import Any

from judges.metrics import Outcome

SCALE_MIN = 1
SCALE_MAX = 5
RAW_LIMIT = 2000  # characters of the judge's text kept in judgments.raw_verdict

SCORE_KEYS = ("score", "rating", "grade")
REASON_KEYS = ("reason", "explanation", "rationale", "justification")
# "Score: 4", "**Rating**: 4/5", "score = 3". Group 2 is an optional denominator.
LABELLED_SCORE = re.compile(
    r"\b(?:score|rating|grade)\b\W{0,6}?(-?\d+(?:\.\d+)?)\s*(?:/\s*(\d+))?", re.IGNORECASE
)
BARE_SCORE = re.compile(r"^\W*(-?\d+(?:\.\d+)?)\s*(?:/\s*(\d+))?\W*$")
REFUSAL = re.compile(
    r"\b(I'?m sorry|I am sorry|I can(?:no|')t (?:help|assist|evaluate|rate|provide)|"
    r"I am unable|I'm unable|As an AI)\b",
    re.IGNORECASE,
)


@dataclass(frozen=True, slots=True)
class ParsedVerdict:
    score: int | None  # None: unparseable, and ``reason`` says why
    reason: str


@dataclass(frozen=True, slots=True)
class Verdict:
    """One evaluation of one (prompt, response) pair by one judge."""

    outcome: Outcome
    score: float | None = None
    reason: str = ""
    raw: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    attempts: int = 0
    latency_s: float = 0.0
    judge_model: str | None = None

    @property
    def tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


def parse_verdict(text: str | None, low: int = SCALE_MIN, high: int = SCALE_MAX) -> ParsedVerdict:
    """Read one integer score in [low, high] (and a reason) from JSON, fenced JSON or prose."""
    if text is None or not text.strip():
        return ParsedVerdict(None, "empty verdict")
    obj = _first_json_object(text)
    if obj is not None:
        return _from_json(obj, low, high)
    matches = LABELLED_SCORE.findall(text) or BARE_SCORE.findall(text.strip())
    if matches:
        values = {(value, denominator) for value, denominator in matches}
        if len(values) > 1:
            shown = ", ".join(sorted(v + (f"/{d}" if d else "") for v, d in values))
            return ParsedVerdict(None, f"conflicting scores in verdict: {shown}")
        value, denominator = matches[0]
        if denominator and int(denominator) != high:
            return ParsedVerdict(
                None, f"score {value}/{denominator} is not on the {low}-{high} scale"
            )
        return _checked(value, low, high, _prose_reason(text))
    if REFUSAL.search(text):
        return ParsedVerdict(None, "judge refused")
    return ParsedVerdict(None, "no score found in verdict")


def _first_json_object(text: str) -> dict[str, Any] | None:
    """The first JSON object anywhere in the text (inside code fences or prose), if any."""
    decoder = json.JSONDecoder()
    start = text.find("{")
    while start != -1:
        try:
            obj, _ = decoder.raw_decode(text, start)
        except json.JSONDecodeError:
            start = text.find("{", start + 1)
            continue
        if isinstance(obj, dict):
            return obj
        start = text.find("{", start + 1)
    return None


def _from_json(obj: dict[str, Any], low: int, high: int) -> ParsedVerdict:
    lowered = {str(k).lower(): v for k, v in obj.items()}
    reason = next((str(lowered[k]) for k in REASON_KEYS if k in lowered), "")
    key = next((k for k in SCORE_KEYS if k in lowered), None)
    if key is None:
        return ParsedVerdict(None, "JSON verdict has no score")
    value = lowered[key]
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        return ParsedVerdict(None, f"JSON score {value!r} is not a number")
    return _checked(str(value).strip(), low, high, reason)


def _checked(value: str, low: int, high: int, reason: str) -> ParsedVerdict:
    try:
        number = float(value)
    except ValueError:
        return ParsedVerdict(None, f"score {value!r} is not a number")
    if not math.isfinite(number) or number != int(number):
        return ParsedVerdict(None, f"score {value} is not a whole number on the {low}-{high} scale")
    if not low <= number <= high:
        return ParsedVerdict(None, f"score {value} is outside {low}-{high}")
    return ParsedVerdict(int(number), reason)


def _prose_reason(text: str) -> str:
    """The text without the score line, as the reason of a prose verdict (shortened)."""
    rest = LABELLED_SCORE.sub("", text).strip(" \n\t*:-.")
    return rest[:500]
