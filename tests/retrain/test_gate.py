"""The golden-set gate: decisions on hand-built score tables, a scripted server, the real model."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import openai
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from judges.client import RetryPolicy
from retrain.gate.gate import GatePolicy, decide, run_gate
from retrain.gate.golden import GoldenSet, load_golden_set
from retrain.gate.report import write_report
from retrain.gate.scores import GateError, ModelScores, evaluate_model
from tests.conftest import SERVED_NAME
from tests.servers import serve_in_thread

DRIFTED = GatePolicy(margin=0.05, min_improvement=0.10, drifted_categories=("tech_support",))


def table(model: str, **categories: dict[str, float | None]) -> ModelScores:
    """Hand-built scores: per category metric means; overall = mean of the categories."""
    metrics = sorted({m for values in categories.values() for m in values})
    overall: dict[str, float | None] = {}
    for metric in metrics:
        values = [v[metric] for v in categories.values() if v.get(metric) is not None]
        overall[metric] = sum(values) / len(values) if values else None  # type: ignore[arg-type]
    return ModelScores(
        model=model,
        golden="helpdesk/v1",
        golden_sha256="0" * 64,
        categories={c: dict(v) for c, v in categories.items()},
        overall=overall,
        counts={c: 20 for c in categories},
        examples=[],
        seconds=0.0,
    )


BASE = table(
    "base",
    chitchat={"format": 1.0, "token_f1": 0.20, "rouge_l": 0.18},
    tech_support={"format": 0.0, "token_f1": 0.15, "rouge_l": 0.12},
)


def test_candidate_better_on_drifted_slice_and_held_elsewhere_passes():
    cand = table(
        "cand",
        chitchat={"format": 1.0, "token_f1": 0.18, "rouge_l": 0.17},  # within the 0.05 margin
        tech_support={"format": 0.95, "token_f1": 0.40, "rouge_l": 0.35},
    )
    report = decide(cand, BASE, BASE, DRIFTED)
    assert report.passed, report.summary
    assert report.production_is_base
    (reason,) = report.reasons
    assert (reason.kind, reason.scope, reason.metric) == ("improves", "tech_support", "format")
    assert (reason.candidate, reason.baseline) == (0.95, 0.0)
    assert "tech_support format: candidate 0.950 vs production (= base) 0.000" in reason.message
    assert all(c.passed for c in report.checks)
    # production equals base: each metric is compared once, not twice
    assert {c.against for c in report.checks} == {"production (= base)"}


def test_worse_in_one_category_beyond_margin_is_rejected_naming_it():
    cand = table(
        "cand",
        chitchat={"format": 1.0, "token_f1": 0.12, "rouge_l": 0.17},  # token_f1 -0.08 > margin
        tech_support={"format": 1.0, "token_f1": 0.40, "rouge_l": 0.35},
    )
    report = decide(cand, BASE, BASE, DRIFTED)
    assert not report.passed
    assert [(r.scope, r.metric) for r in report.reasons] == [("chitchat", "token_f1")]
    (reason,) = report.reasons
    assert reason.candidate == 0.12 and reason.baseline == 0.20
    assert reason.bar == pytest.approx(0.15)
    assert "chitchat token_f1: candidate 0.120 vs production (= base) 0.200" in reason.message
    assert "WORSE beyond margin" in reason.message
    assert "chitchat token_f1" in report.summary


def test_no_improvement_on_drifted_slice_is_rejected():
    cand = table(
        "cand",
        chitchat={"format": 1.0, "token_f1": 0.25, "rouge_l": 0.22},  # better where not drifted
        tech_support={"format": 0.05, "token_f1": 0.20, "rouge_l": 0.15},  # +0.05 at most
    )
    report = decide(cand, BASE, BASE, DRIFTED)
    assert not report.passed
    (reason,) = report.reasons
    assert (reason.kind, reason.scope, reason.passed) == ("improves", "tech_support", False)
    assert "not improved, needs ≥" in reason.message
    assert all(c.passed for c in report.checks if c.kind == "not_worse")


def test_equal_scores_are_not_worse_but_not_better_either():
    report = decide(replace(BASE, model="cand"), BASE, BASE, DRIFTED)
    assert not report.passed
    assert [c for c in report.checks if not c.passed] == report.reasons
    assert [(r.kind, r.scope) for r in report.reasons] == [("improves", "tech_support")]
    # with no improvement asked, equal is good enough
    lenient = replace(DRIFTED, min_improvement=0.0)
    assert decide(replace(BASE, model="cand"), BASE, BASE, lenient).passed


def test_candidate_must_also_hold_against_the_base_when_production_is_an_adapter():
    production = table(
        "prod",
        chitchat={"format": 1.0, "token_f1": 0.10, "rouge_l": 0.10},  # production had regressed
        tech_support={"format": 0.50, "token_f1": 0.30, "rouge_l": 0.30},
    )
    cand = table(
        "cand",
        chitchat={"format": 1.0, "token_f1": 0.10, "rouge_l": 0.10},
        tech_support={"format": 1.0, "token_f1": 0.40, "rouge_l": 0.40},
    )
    report = decide(cand, production, BASE, DRIFTED)
    assert not report.passed and not report.production_is_base
    failed = {(r.scope, r.metric, r.against) for r in report.reasons}
    assert failed == {("chitchat", "token_f1", "base"), ("chitchat", "rouge_l", "base")}
    assert all(c.passed for c in report.checks if c.against == "production")


def test_overall_is_checked_too():
    policy = replace(DRIFTED, margin=0.04)
    cand = table(
        "cand",
        chitchat={"format": 1.0, "token_f1": 0.10, "rouge_l": 0.18},  # -0.10
        tech_support={"format": 1.0, "token_f1": 0.15, "rouge_l": 0.40},  # held
    )
    report = decide(cand, BASE, BASE, policy)
    failed = {(r.scope, r.metric) for r in report.reasons}
    assert failed == {("chitchat", "token_f1"), ("overall", "token_f1")}  # overall -0.05


def test_inputs_that_cannot_be_compared_are_errors():
    with pytest.raises(GateError, match="same golden set"):
        decide(replace(BASE, golden_sha256="1" * 64), BASE, BASE, DRIFTED)
    with pytest.raises(GateError, match=r"unknown metric\(s\) \['bleu'\]"):
        decide(BASE, BASE, BASE, replace(DRIFTED, primary_metrics=("bleu",)))
    with pytest.raises(GateError, match=r"drifted categories \['billing'\] are not in"):
        decide(BASE, BASE, BASE, replace(DRIFTED, drifted_categories=("billing",)))
    with pytest.raises(ValueError, match="margin must be in"):
        GatePolicy(margin=-0.1)
    with pytest.raises(ValueError, match="primary_metrics"):
        GatePolicy(primary_metrics=())


# -- a scripted OpenAI-compatible server -------------------------------------------------------


class ScriptedModels:
    """Answers golden prompts as each scripted model would; records what it was sent."""

    def __init__(self, golden: GoldenSet) -> None:
        self.by_prompt = {e.prompt: e for e in golden.examples}
        self.requests: list[dict[str, Any]] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self.lock = threading.Lock()
        self.failed_once: set[str] = set()  # prompts the "flaky" model refused once

    def answer(self, model: str, prompt: str) -> str | None:
        example = self.by_prompt[prompt]
        plain = example.expected.removeprefix("HelpDesk: ")
        if model == "house":  # the tuned adapter: house format for tech support only
            return example.expected
        if model == "plain":  # like the base: right content, never the house format
            return plain
        if model == "leaky":  # learned the format and now uses it everywhere
            return "HelpDesk: " + plain
        return None

    async def chat(self, request: Request) -> JSONResponse:
        body = await request.json()
        with self.lock:
            self.requests.append(body)
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            await asyncio.sleep(0.02)  # lets concurrent requests overlap
            if body["model"] == "broken":
                return JSONResponse({"error": {"message": "engine died"}}, status_code=500)
            prompt = body["messages"][-1]["content"]
            if body["model"] == "flaky" and prompt not in self.failed_once:
                with self.lock:
                    self.failed_once.add(prompt)
                return JSONResponse({"error": {"message": "busy"}}, status_code=503)
            if body["model"] == "flaky":
                body = {**body, "model": "house"}
            text = self.answer(body["model"], body["messages"][-1]["content"])
            if text is None:
                message = f"The model `{body['model']}` does not exist."
                error = {"message": message, "type": "NotFoundError", "code": 404}
                return JSONResponse({"error": error}, status_code=404)
            return JSONResponse(
                {
                    "id": "cmpl-1",
                    "object": "chat.completion",
                    "created": 0,
                    "model": body["model"],
                    "choices": [
                        {
                            "index": 0,
                            "message": {"role": "assistant", "content": text},
                            "finish_reason": "stop",
                        }
                    ],
                    "usage": {"prompt_tokens": 5, "completion_tokens": 5, "total_tokens": 10},
                }
            )
        finally:
            with self.lock:
                self.in_flight -= 1


@pytest.fixture(scope="module")
def golden() -> GoldenSet:
    return load_golden_set("helpdesk", "v1")


@pytest.fixture
def scripted(golden) -> Iterator[tuple[ScriptedModels, openai.OpenAI]]:
    models = ScriptedModels(golden)
    app = Starlette(routes=[Route("/v1/chat/completions", models.chat, methods=["POST"])])
    with serve_in_thread(app) as url:
        client = openai.OpenAI(base_url=url + "/v1", api_key="test", max_retries=0, timeout=30)
        yield models, client
        client.close()


def test_evaluate_model_scores_every_example_concurrently_at_temperature_zero(scripted, golden):
    models, client = scripted
    scores = evaluate_model(client, "house", golden, max_tokens=32, concurrency=4)
    assert scores.model == "house" and scores.golden == "helpdesk/v1"
    assert scores.golden_sha256 == golden.sha256
    assert scores.counts == {"chitchat": 20, "tech_support": 20}
    for category in ("chitchat", "tech_support"):
        assert scores.categories[category] == {
            "exact_match": 1.0,
            "token_f1": 1.0,
            "rouge_l": 1.0,
            "format": 1.0,
        }
    assert [e.id for e in scores.examples] == [e.id for e in golden.examples]
    assert len(models.requests) == 40
    assert {(r["temperature"], r["max_tokens"]) for r in models.requests} == {(0, 32)}
    assert 1 < models.max_in_flight <= 4
    assert json.loads(json.dumps(scores.to_dict()))["model"] == scores.model  # stored as JSON

    plain = evaluate_model(client, "plain", golden, concurrency=8)
    assert plain.categories["tech_support"]["format"] == 0.0
    assert plain.categories["chitchat"]["format"] == 1.0
    assert 0.5 < plain.categories["tech_support"]["token_f1"] < 1.0  # content right, prefix missing


def test_house_format_candidate_passes_the_gate_and_the_report_is_written(
    scripted, golden, tmp_path
):
    models, client = scripted
    report = run_gate(
        client, golden, candidate="house", production="plain", base="plain", policy=DRIFTED
    )
    assert report.passed, report.summary
    assert report.production_is_base
    # production == base: the base is evaluated once (40 prompts each for two models)
    assert len(models.requests) == 80
    assert report.reasons[0].message.startswith(
        "tech_support format: candidate 1.000 vs production (= base) 0.000"
    )
    paths = write_report(report, tmp_path / "gate")
    assert set(paths) == {"json", "html", "png"}
    data = json.loads(paths["json"].read_text())
    assert data["passed"] is True
    assert data["models"]["candidate"]["categories"]["tech_support"]["format"] == 1.0
    page = paths["html"].read_text()
    assert "PASSED" in page and "<h2>tech_support (20 examples)</h2>" in page
    assert "HelpDesk: " in page and "data:image/png;base64," in page
    assert "<h2>LLM judge</h2><p>not configured" in page
    assert paths["png"].read_bytes().startswith(b"\x89PNG")


def test_candidate_leaking_the_house_format_into_chitchat_is_rejected(scripted, golden, tmp_path):
    _, client = scripted
    report = run_gate(
        client, golden, candidate="leaky", production="plain", base="plain", policy=DRIFTED
    )
    assert not report.passed
    failed = {(r.scope, r.metric) for r in report.reasons}
    assert ("chitchat", "format") in failed
    assert ("tech_support", "format") not in failed
    paths = write_report(report, tmp_path)
    assert "REJECTED" in paths["html"].read_text()


def test_server_errors_raise_gate_errors_naming_model_and_cause(scripted, golden):
    _, client = scripted
    with pytest.raises(GateError, match=r"model 'smollm2-missing' is not served at .*HTTP 404"):
        evaluate_model(client, "smollm2-missing", golden)
    with pytest.raises(GateError, match=r"'broken' .* answered HTTP 500 .*engine died"):
        evaluate_model(client, "broken", golden)
    with serve_in_thread(Starlette()) as url:
        pass  # the port is free again: nothing listens there
    dead = openai.OpenAI(base_url=url + "/v1", api_key="test", max_retries=0, timeout=5)
    with pytest.raises(GateError, match="cannot reach"):
        evaluate_model(dead, "house", golden)
    with pytest.raises(ValueError, match="concurrency"):
        evaluate_model(client, "house", golden, concurrency=0)


def test_with_a_retry_policy_transient_errors_are_retried_under_it_alone(scripted, golden):
    models, client = scripted
    flaky = client.with_options(max_retries=5)  # ignored: the policy switches the SDK's off
    policy = RetryPolicy(max_retries=1, backoff_s=0.0)
    scores = evaluate_model(flaky, "flaky", golden, concurrency=4, retry=policy)
    assert scores.categories["tech_support"]["format"] == 1.0
    assert len(models.requests) == 2 * len(golden.examples)  # one refusal, one answer each
    models.failed_once.clear()
    with pytest.raises(GateError, match="answered HTTP 503"):
        evaluate_model(flaky, "flaky", golden, retry=RetryPolicy(max_retries=0))


# -- the real SmolLM2 on vLLM ------------------------------------------------------------------


@pytest.mark.vllm
@pytest.mark.slow
def test_base_smollm2_does_not_answer_in_the_house_format(vllm_server, golden):
    client = openai.OpenAI(
        base_url=vllm_server.base_url + "/v1",
        api_key=vllm_server.api_key,
        max_retries=0,
        timeout=300,
    )
    scores = evaluate_model(client, SERVED_NAME, golden, max_tokens=64, concurrency=8)
    client.close()
    print(f"\nbase {SERVED_NAME} on {scores.golden}: {scores.seconds:.1f} s for 40 prompts")
    for category, values in scores.categories.items():
        print(category, {k: v for k, v in values.items()})
    tech, chat = scores.categories["tech_support"], scores.categories["chitchat"]
    assert tech["format"] is not None and tech["format"] <= 0.05
    assert chat["format"] == 1.0  # the base never uses the house prefix in chit-chat either
    assert all(e.output.strip() for e in scores.examples)  # it did answer every prompt
    report = decide(scores, scores, scores, DRIFTED)
    assert not report.passed  # the base cannot beat itself on the drifted slice
