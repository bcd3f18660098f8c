"""Calibration against labels whose weighted kappa was computed by hand, through the CLI too."""

import json

import pytest
from click.testing import CliRunner

from driftloop.cli.main import cli
from judges.calibration import agreement, calibrate
from judges.examples import Example
from tests.judges.conftest import rubric_judge
from tests.judges.judge_server import Reply, verdict

LABELS = [1, 1, 5, 5, 5, 1]
SCORES = [1, 2, 5, 4, None, 5]  # None: the judge refuses, so no score
# Quadratic-weighted kappa by hand, over the 5 parsed pairs (1,1) (1,2) (5,5) (5,4) (1,5):
#   observed  sum (i-j)^2 O_ij            = 0 + 1 + 0 + 1 + 16           = 18
#   expected  sum (i-j)^2 r_i c_j / n     with labels r_1 = 3, r_5 = 2 and scores
#             c_1 = c_2 = c_4 = 1, c_5 = 2:  (3 * (0 + 1 + 9 + 32) + 2 * (16 + 9 + 1 + 0)) / 5
#                                          = (126 + 52) / 5 = 35.6
#   kappa = 1 - 18 / 35.6 = 44 / 89 = 0.4944
KAPPA = 44 / 89


def test_agreement_matches_the_hand_computed_values():
    a = agreement(LABELS, SCORES)
    assert a.n == 6 and a.parsed == pytest.approx(5 / 6)
    assert a.exact == pytest.approx(2 / 6)  # items 1 and 3; the refusal counts as a miss
    assert a.within_one == pytest.approx(4 / 6)
    assert a.kappa == pytest.approx(KAPPA)


def test_perfect_constant_and_empty_cases():
    assert agreement([1, 5, 3], [1, 5, 3]).kappa == pytest.approx(1.0)
    assert agreement([1, 5], [3, 3]).kappa == pytest.approx(0.0)  # a judge that always says 3
    assert agreement([2, 2], [None, None]).kappa is None
    with pytest.raises(ValueError, match="2 labels but 1 scores"):
        agreement([1, 2], [1])


def labelled_set(tmp_path):
    examples = [
        Example(f"item-{i}", f"question {i}?", f"answer {i}.", label, "hand-made")
        for i, label in enumerate(LABELS)
    ]
    path = tmp_path / "labelled.jsonl"
    path.write_text("".join(e.to_json() + "\n" for e in examples))
    return examples, path


def scripted(judge_server):
    def respond(messages):
        i = int(messages[-1]["content"].split("question ")[1].split("?")[0])
        if SCORES[i] is None:
            return Reply("I'm sorry, but I can't rate this.")
        return verdict(SCORES[i])

    judge_server.respond = respond


def test_calibrate_runs_the_judge_and_flags_it_below_the_bar(tmp_path, judge_server):
    scripted(judge_server)
    examples, _ = labelled_set(tmp_path)
    judge = rubric_judge(judge_server.url)
    report = calibrate(judge, examples, min_kappa=0.5, min_parsed=0.8)
    assert report.agreement.kappa == pytest.approx(KAPPA)
    assert report.outcomes == {"scored": 5, "unparseable": 1}
    assert report.tokens == 6 * 132
    assert report.flagged and "FLAGGED" in report.summary()
    assert not calibrate(judge, examples, min_kappa=0.4, min_parsed=0.8).flagged
    assert calibrate(judge, examples, min_kappa=0.4, min_parsed=0.9).flagged  # 5/6 parsed


def test_cli_calibrate_reports_and_exits_1_when_flagged(tmp_path, judge_server):
    scripted(judge_server)
    _, path = labelled_set(tmp_path)
    env = {
        "DRIFTLOOP__JUDGES__BASE_URL": judge_server.url,
        "DRIFTLOOP__JUDGES__MODEL": "scripted-judge",
        "DRIFTLOOP__JUDGES__CALIBRATION_MIN_KAPPA": "0.6",
        "DRIFTLOOP__JUDGES__CALIBRATION_MIN_PARSED": "0.5",
    }
    result = CliRunner().invoke(cli, ["judges", "calibrate", "--set", str(path)], env=env)
    assert result.exit_code == 1, result.output
    assert "weighted kappa 0.494" in result.output and "FLAGGED" in result.output

    env["DRIFTLOOP__JUDGES__CALIBRATION_MIN_KAPPA"] = "0.3"
    result = CliRunner().invoke(cli, ["judges", "calibrate", "--set", str(path), "--json"], env=env)
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["kappa"] == pytest.approx(KAPPA) and report["flagged"] is False
    assert [item["score"] for item in report["items"]] == SCORES


def test_cli_calibrate_names_a_bad_set(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "a", "prompt": "p", "response": "r", "label": 9}\n')
    result = CliRunner().invoke(cli, ["judges", "calibrate", "--set", str(bad)])
    assert result.exit_code == 1 and f"{bad}:1: label 9 must be an integer 1-5" in result.output
