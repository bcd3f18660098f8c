"""Verdict parsing: every shape a judge model answers in, and everything that must not become a score."""

import pytest

from judges.verdict import parse_verdict

SCORED = [
    ('{"score": 4, "reason": "correct"}', 4, "correct"),
    ('```json\n{"score": 5, "reason": "exact"}\n```', 5, "exact"),
    ('Here is my verdict: {"Score": "2", "explanation": "off"} done', 2, "off"),
    ('{"rating": 1.0, "rationale": "wrong question"}', 1, "wrong question"),
    ("Score: 4", 4, ""),
    ("**Score:** 3/5\nThe answer is partly right.", 3, "The answer is partly right"),
    ("rating = 5", 5, ""),
    ("4", 4, ""),
    ("Score: 2. Score: 2 again", 2, "again"),
]

UNPARSEABLE = [
    ('{"score": 7, "reason": "great"}', "outside 1-5"),
    ('{"score": 0}', "outside 1-5"),
    ('{"score": 3.5}', "not a whole number"),
    ('{"score": true}', "not a number"),
    ('{"score": "high"}', "not a number"),
    ('{"score": null}', "not a number"),
    ('{"score": "NaN"}', "not a whole number"),
    ('{"reason": "fine"}', "has no score"),
    ("Score: 9/10", "not on the 1-5 scale"),
    ("Score: 6", "outside 1-5"),
    ("Score: 2 ... actually Score: 5", "conflicting scores"),
    ("I'm sorry, but I can't evaluate this conversation.", "judge refused"),
    ("The answer mentions Paris.", "no score found"),
    ("{not json at all", "no score found"),
    ("", "empty verdict"),
    ("   \n", "empty verdict"),
    (None, "empty verdict"),
]


@pytest.mark.parametrize(("text", "score", "reason"), SCORED)
def test_scores_are_read_from_json_fences_and_prose(text, score, reason):
    parsed = parse_verdict(text)
    assert parsed.score == score
    assert reason in parsed.reason


@pytest.mark.parametrize(("text", "why"), UNPARSEABLE)
def test_anything_else_is_unparseable_with_a_reason(text, why):
    parsed = parse_verdict(text)
    assert parsed.score is None
    assert why in parsed.reason
