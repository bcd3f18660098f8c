"""End to end with a real model as judge: SmolLM2-135M-Instruct served by vLLM.

Traffic goes through the sidecar into DuckDB; the service's judge job scores it with the same
vLLM; then the judge is calibrated on a slice of the shipped labelled set. SmolLM2-135M is a weak
judge (it mostly answers 1): what is asserted is that wiring, parsing and accounting are real,
and the measured agreement is printed (run with -s; full-set numbers are in the README).
"""

import json

import openai
import pytest

from judges.calibration import calibrate
from judges.client import Endpoint
from judges.examples import CALIBRATION_SET, load_examples
from judges.llm import RubricJudge
from judges.rubric import load_rubric
from monitor.corpora import chatterbot_conversations
from tests.conftest import SERVED_NAME

pytestmark = [pytest.mark.vllm, pytest.mark.slow]

CALIBRATION_ITEMS = 8  # 4 questions, each with its own answer (5) and another's (1)
JUDGE_MAX_TOKENS = 64  # shorter verdicts keep the test quick; the score comes first anyway


def test_captured_traffic_is_judged_by_the_real_model(vllm_server, start_sidecar):
    sidecar = start_sidecar(
        vllm_server.base_url,
        upstream_api_key=vllm_server.api_key,  # the judge defaults to the upstream and its key
        aliases={"support": SERVED_NAME},
        drift={"enabled": False},
        judges={
            "sample_rate": 1.0,
            "timeout_s": 120,
            "max_tokens": JUDGE_MAX_TOKENS,
        },
    )
    client = openai.OpenAI(base_url=sidecar.url + "/v1", api_key="x", max_retries=0, timeout=120)
    questions = [c.prompt for c in chatterbot_conversations(["trivia"])[:3]]
    for question in questions:
        client.chat.completions.create(
            model="support", messages=[{"role": "user", "content": question}], max_tokens=24
        )
    sidecar.flush()
    report = sidecar.parts.jobs.run_now("judge")
    llm = report["helpfulness"]
    assert sum(llm.values()) == 3 and set(llm) <= {"scored", "unparseable"}, llm
    rows = sidecar.rows(
        "SELECT j.judge_model, j.prompt_tokens, j.completion_tokens, j.attempts, j.outcome,"
        " j.score, j.raw_verdict, r.prompt_text FROM judgments j JOIN requests r USING (request_id)"
        " WHERE j.judge = 'helpfulness'"
    )
    assert sorted(r[7] for r in rows) == sorted(questions)
    for model, prompt_tokens, completion_tokens, attempts, outcome, score, raw, _ in rows:
        assert model == SERVED_NAME and attempts == 1
        assert prompt_tokens > 100 and completion_tokens > 0  # the rubric alone is ~200 tokens
        assert (score is not None) == (outcome == "scored") and raw is not None
        print(f"verdict {outcome} {score}: {raw!r}")
    spent = sum(r[1] + r[2] for r in rows)
    assert sidecar.metric("driftloop_judge_tokens_total", judge="helpfulness") == spent
    assert sidecar.metric("driftloop_judge_budget_remaining_tokens", judge="helpfulness") == (
        200_000 - spent
    )


def test_calibration_of_the_real_model_is_measured(vllm_server):
    """With the verdict schema enforced (free-form verdicts are exercised by the traffic test)."""
    examples = load_examples(CALIBRATION_SET)[:CALIBRATION_ITEMS]
    judge = RubricJudge(
        load_rubric("helpfulness"),
        Endpoint(
            vllm_server.base_url + "/v1",
            SERVED_NAME,
            timeout_s=120,
            api_key_value=vllm_server.api_key,
        ),
        structured_output=True,
        max_tokens=JUDGE_MAX_TOKENS,
    )
    report = calibrate(judge, examples, min_kappa=0.4, concurrency=4)
    print(report.summary(), json.dumps(report.outcomes))
    assert sum(report.outcomes.values()) == CALIBRATION_ITEMS
    assert "error" not in report.outcomes, report.items
    assert report.tokens > CALIBRATION_ITEMS * 100
    assert report.agreement.parsed == 1.0  # vLLM enforces the schema: every verdict parses
    for item in report.items:
        assert (item["score"] is None) == (item["outcome"] == "unparseable")
