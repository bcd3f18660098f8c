"""The LLM judge in the gate, against a real scripted judge server and a real DuckDB file.

Refused (and never called) without a calibration on record or with one below the bar; used once
a calibration meets it; every pair judged in both orders, position-swap consistency recorded.
"""

from __future__ import annotations

from judges.calibration_records import judge_trust, recorded_calibrations
from judges.pairwise import PairwiseJudge
from judges.rubric import load_rubric
from retrain.gate.judge import CalibratedJudge
from retrain.gate.report import judge_html
from retrain.gate.scores import ExampleResult, ModelScores
from tests.judges.conftest import BARS, calibrate_against, endpoint, rubric_judge
from tests.judges.judge_server import Reply, verdict

PROMPTS = ["My printer is not printing.", "My screen is flickering.", "I forgot my password."]


def scores(model: str, answers: list[str]) -> ModelScores:
    examples = [
        ExampleResult(f"g{i}", "tech_support", p, "HelpDesk: x", a, "stop", {})
        for i, (p, a) in enumerate(zip(PROMPTS, answers, strict=True))
    ]
    return ModelScores(model, "helpdesk/v1", "sha", {}, {}, {}, examples, 0.0)


CANDIDATE = scores("helpdesk-v1", [f"HelpDesk: fix {i}." for i in range(3)])
PRODUCTION = scores("base", ["I do not know."] * 3)


def gate_judge(store, url) -> CalibratedJudge:
    judge = rubric_judge(url)
    pairwise = PairwiseJudge(load_rubric("helpfulness"), endpoint(url))
    return CalibratedJudge(store, pairwise, judge.name, margin=0.05, **BARS)


def test_a_judge_without_a_calibration_on_record_is_not_used_nor_called(store, judge_server):
    check, status = gate_judge(store, judge_server.url)(CANDIDATE, PRODUCTION)

    assert check is None and status["used"] is False
    assert "no calibration on record" in status["status"]
    assert judge_server.attempts == 0


def test_a_judge_below_the_kappa_bar_is_refused_visibly(store, judge_server):
    # a judge that gives every answer 1, like SmolLM2-135M does (kappa 0)
    report = calibrate_against(store, judge_server, lambda label: verdict(1))
    assert report.flagged
    judge_server.requests.clear()

    check, status = gate_judge(store, judge_server.url)(CANDIDATE, PRODUCTION)

    assert check is None and status["used"] is False
    assert "kappa 0.000" in status["status"] and "below the bar (kappa >= 0.4" in status["status"]
    assert judge_server.attempts == 0
    assert recorded_calibrations(store, 5)[0]["flagged"] is True


def test_a_calibrated_judge_counts_and_both_orders_are_asked(store, judge_server):
    report = calibrate_against(store, judge_server, lambda label: verdict(label))
    assert report.agreement.kappa == 1.0 and not report.flagged
    judge_server.requests.clear()

    def prefers_the_house_format(messages):
        text = messages[-1]["content"]
        a = text.split("Answer A:\n")[1].split("\n\nAnswer B:")[0]
        return Reply('{"winner": "A"}' if a.startswith("HelpDesk:") else '{"winner": "B"}')

    judge_server.respond = prefers_the_house_format
    check, status = gate_judge(store, judge_server.url)(CANDIDATE, PRODUCTION)

    assert status["used"] is True and status["status"].startswith("used: ")
    assert judge_server.attempts == 2 * len(PROMPTS)  # each pair in both orders
    assert check is not None and check.passed and check.candidate == 1.0
    assert status["pairwise"]["outcomes"] == {"win": 3}
    assert status["pairwise"]["position_consistency"] == 1.0
    page = judge_html(status)  # the gate report's section
    assert "<p>used: " in page and "win rate 1.000" in page and "consistency 1.000" in page

    # the candidate losing every pair fails the check
    check, _ = gate_judge(store, judge_server.url)(PRODUCTION, CANDIDATE)
    assert check is not None and not check.passed and check.candidate == 0.0


def test_a_judge_that_always_prefers_the_first_answer_yields_ties_and_zero_consistency(
    store, judge_server
):
    calibrate_against(store, judge_server, lambda label: verdict(label))
    judge_server.respond = lambda messages: Reply('{"winner": "A"}')

    check, status = gate_judge(store, judge_server.url)(CANDIDATE, PRODUCTION)

    assert status["pairwise"]["outcomes"] == {"tie": 3}
    assert status["pairwise"]["position_consistency"] == 0.0
    assert check is not None and check.candidate == 0.5 and check.passed  # no better, no worse


def test_trust_is_per_judge_model_and_rubric_version(store, judge_server):
    calibrate_against(store, judge_server, lambda label: verdict(label))
    judge = rubric_judge(judge_server.url)
    same = judge_trust(store, judge.name, "scripted-judge", judge.version, **BARS)
    other_model = judge_trust(store, judge.name, "another-model", judge.version, **BARS)
    other_rubric = judge_trust(store, judge.name, "scripted-judge", "0123456789ab", **BARS)
    assert same.trusted and not other_model.trusted and not other_rubric.trusted
