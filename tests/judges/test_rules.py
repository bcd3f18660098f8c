"""Rule judges: pass scores 5, failure scores 1 with the reason; bad parameters are named."""

import asyncio

import pytest

from judges.plugins import build_rule_judge


def verdict(kind, response, **params):
    return asyncio.run(build_rule_judge(kind, params).evaluate("a prompt", response))


@pytest.mark.parametrize(
    ("kind", "params", "response", "score", "reason"),
    [
        ("refusal", {}, "I'm sorry, but I can't help with that.", 1.0, "refusal"),
        ("refusal", {}, "Sorry to hear that! Restart the router.", 5.0, "pass"),
        ("empty", {}, " \n", 1.0, "empty response"),
        ("empty", {}, "ok", 5.0, "pass"),
        ("json_valid", {}, '```json\n{"a": 1}\n```', 5.0, "pass"),
        ("json_valid", {"allow_fence": False}, '```json\n{"a": 1}\n```', 1.0, "invalid JSON"),
        ("json_valid", {}, '{"a": 1,}', 1.0, "invalid JSON"),
        ("regex", {"pattern": r"\bTicket #\d+"}, "Opened Ticket #42.", 5.0, "pass"),
        ("regex", {"pattern": r"\bTicket #\d+"}, "Opened a ticket.", 1.0, "no match"),
        (
            "regex",
            {"pattern": "password", "must_match": False},
            "your password is",
            1.0,
            "forbidden",
        ),
        ("length", {"min_chars": 3, "max_chars": 5}, "ab", 1.0, "fewer than 3"),
        ("length", {"min_chars": 3, "max_chars": 5}, "abcdef", 1.0, "more than 5"),
        ("length", {"min_chars": 3, "max_chars": 5}, "abcd", 5.0, "pass"),
    ],
)
def test_rule_verdicts(kind, params, response, score, reason):
    v = verdict(kind, response, **params)
    assert v.outcome == "scored" and v.score == score and reason in v.reason
    assert v.tokens == 0


@pytest.mark.parametrize(
    ("kind", "params", "message"),
    [
        ("spelling", {}, "unknown rule judge 'spelling'"),
        ("regex", {"pattern": "("}, "not a valid regular expression"),
        ("regex", {}, "rule judge 'regex'"),
        ("length", {"min_chars": 10, "max_chars": 2}, "below min_chars"),
        ("empty", {"strict": True}, "has no parameter(s) ['strict']"),
        ("rubric", {}, "unknown rule judge 'rubric'"),
    ],
)
def test_bad_rule_configuration_names_the_problem(kind, params, message):
    with pytest.raises(ValueError, match=None) as info:
        build_rule_judge(kind, params)
    assert message in str(info.value)


def test_changed_parameters_change_the_version():
    a = build_rule_judge("regex", {"pattern": "a"})
    b = build_rule_judge("regex", {"pattern": "b"})
    assert a.version != b.version
    assert a.version == build_rule_judge("regex", {"pattern": "a"}).version
