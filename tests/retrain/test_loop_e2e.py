"""The whole loop on the real vLLM serving SmolLM2-135M-Instruct, driven like production.

Traffic through the sidecar drifts from chit-chat to tech support; drift trips; operator feedback
(through the control API) plus a replay of the production model's data make the dataset; a LoRA
trains in a subprocess; the golden-set gate compares it with production; it ships through the
alias; a rollback through the API restores the base. Then a poisoned dataset: the gate rejects
and production does not move.
"""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
from openai import OpenAI

from driftloop.api.app import create_api
from driftloop.api.loop_routes import loop_router
from driftloop.demo.story import (
    HOUSE_PREFIX,
    chitchat,
    house_format_feedback,
    poisoned_feedback,
    tech_support_traffic,
    write_seed_dataset,
)
from retrain.adapter_registry import Status
from retrain.control import LoopControl
from retrain.gate.golden import load_golden_set
from retrain.triggers import Trigger, TriggerDecision, TriggerVerdict
from tests.servers import serve_in_thread

pytestmark = [pytest.mark.vllm, pytest.mark.slow, pytest.mark.timeout(1800)]
TOKEN = "t" * 32
ALIAS = "helpdesk"
WINDOW = 40


def send(url: str, prompts: list[str], max_tokens: int = 24) -> list[str]:
    client = OpenAI(base_url=f"{url}/v1", api_key="x", max_retries=0)
    answers = []
    for prompt in prompts:
        reply = client.chat.completions.create(
            model=ALIAS,
            messages=[{"role": "user", "content": prompt}],
            max_tokens=max_tokens,
            temperature=0,
        )
        answers.append(reply.choices[0].message.content or "")
    return answers


@pytest.fixture
def service(start_sidecar, vllm_server, smollm2_dir, tmp_path):
    seed = write_seed_dataset(tmp_path / "seed.jsonl")
    sidecar = start_sidecar(
        vllm_server.base_url,
        upstream_api_key=vllm_server.api_key,
        aliases={ALIAS: vllm_server.served_model_name},
        drift={"reference_size": WINDOW, "window_size": WINDOW, "min_samples": 30},
        judges={"enabled": False},
        retrain={
            "drift_consecutive": 1,
            "cooldown_s": 0,
            "volume_examples": None,
            "quality_bar": None,
            "min_examples": 20,
            "seed_dataset": str(seed),
            "replay_share": 0.5,
            "base_model_dir": str(smollm2_dir),
            "drifted_categories": ["tech_support"],
            "learning_rate": 1e-3,
            "max_steps": 40,
            "batch_size": 8,
            "gate_max_tokens": 32,
            "price_per_cpu_hour": 0.05,  # one training thread: the run's cost is its train time
        },
    )
    retrain = sidecar.parts.retrain
    assert retrain is not None
    api = create_api(
        TOKEN,
        sidecar.parts.store,
        sidecar.parts.sidecar,
        sidecar.parts.aliases,
        [loop_router(LoopControl(retrain.loop), lambda: {ALIAS})],
    )
    with serve_in_thread(api) as api_url:
        client = httpx.Client(
            base_url=api_url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=60
        )
        yield sidecar, retrain.loop, client
        client.close()
    # the next test's registry starts again at v1: vLLM must not keep serving this v1
    for name in retrain.admin.loaded_adapters():
        retrain.admin.unload(name)


def embed_and_evaluate(sidecar) -> None:
    sidecar.flush()
    jobs = sidecar.parts.jobs
    while jobs.run_now("embed"):
        pass
    jobs.run_now("drift")


def post_feedback(api: httpx.Client, exchanges) -> None:
    for e in exchanges:
        reply = api.post(
            "/api/v1/feedback", json={"model": ALIAS, "prompt": e.prompt, "answer": e.answer}
        )
        assert reply.status_code == 201, reply.text


def test_drift_to_a_shipped_adapter_and_back(service):
    sidecar, loop, api = service
    reference = [e.prompt for e in chitchat()[:WINDOW]]
    send(sidecar.url, reference)
    embed_and_evaluate(sidecar)
    assert not loop.triggers.evaluate(ALIAS).should_run  # reference only: nothing to do

    send(sidecar.url, tech_support_traffic(WINDOW))
    embed_and_evaluate(sidecar)
    post_feedback(api, house_format_feedback())

    [result] = loop.tick().values()
    assert result.status == "shipped", result.timeline
    assert result.timeline[0]["stage"] == "dataset"
    assert [t["stage"] for t in result.timeline] == ["dataset", "train", "gate", "deploy", "cost"]
    train_s = result.timeline[1]["seconds"]
    print("cost:", result.timeline[-1]["note"])
    assert result.timeline[-1]["dollars"] == pytest.approx(train_s * 0.05 / 3600, rel=1e-3)
    assert sidecar.metric(
        "driftloop_retrain_cost_dollars_total", model=ALIAS, outcome="shipped"
    ) == pytest.approx(result.timeline[-1]["dollars"])

    run = api.get("/api/v1/retrain/runs", params={"model": ALIAS}).json()[0]
    assert run["trigger"] == "drift" and run["drift_run_id"] is not None
    dataset = json.loads(
        sidecar.rows("SELECT manifest FROM datasets WHERE id = ?", [run["dataset_id"]])[0][0]
    )
    assert dataset["replay"]["share"] >= 0.2
    assert dataset["counts"]["train"]["feedback"] > 0

    lineage = api.get(f"/api/v1/adapters/{run['adapter_id']}").json()
    assert lineage["adapter"]["status"] == "production"
    [evaluation] = lineage["evaluations"]
    assert evaluation["passed"]
    report = json.loads(Path(evaluation["report_path"]).with_suffix(".json").read_text())
    print("gate:", report["summary"])
    checks = report["checks"]
    assert any(
        c["kind"] == "improves" and c["scope"] == "tech_support" and c["passed"] for c in checks
    )
    assert all(c["passed"] for c in checks if c["scope"] == "chitchat")  # domain A held

    # the alias now routes to the new version, and the held-out tech-support prompts get the format
    served = lineage["adapter"]["served_name"]
    assert sidecar.parts.aliases.resolve(ALIAS) == served == f"{ALIAS}-v1"
    golden = load_golden_set("helpdesk")
    held_out = [ex.prompt for ex in golden.by_category("tech_support")][:5]
    answers = send(sidecar.url, held_out, max_tokens=32)
    assert sum(a.startswith(HOUSE_PREFIX) for a in answers) >= 4, answers
    sidecar.flush()
    assert sidecar.rows("SELECT count(*) FROM requests WHERE served_model = ?", [served])[0][0] >= 5

    # an operator rolls back: the base answers again
    reply = api.post(f"/api/v1/models/{ALIAS}/rollback", json={"reason": "customer asked"})
    assert reply.status_code == 200, reply.text
    assert reply.json()["serving"] == "smollm2"
    assert not any(a.startswith(HOUSE_PREFIX) for a in send(sidecar.url, held_out[:3]))
    audit = api.get("/api/v1/audit", params={"limit": 200}).json()
    rollback = [a for a in audit if a["path"].endswith("/rollback")]
    assert rollback and "customer asked" in rollback[0]["detail"]


def test_a_poisoned_dataset_is_rejected_and_production_stays(service):
    sidecar, loop, api = service
    post_feedback(api, poisoned_feedback())
    before = sidecar.parts.aliases.resolve(ALIAS)
    decision = TriggerDecision(Trigger.MANUAL, TriggerVerdict.TRIGGERED, "operator: poison test")
    result = loop.run(ALIAS, decision, actor="operator")
    assert result.status == "rejected", result.timeline
    print("gate:", result.gate.reasons)
    assert result.gate.reasons and not result.gate.passed
    assert sidecar.parts.aliases.resolve(ALIAS) == before
    assert result.adapter.status is Status.REJECTED
    assert sidecar.metric("driftloop_gate_decisions_total", model=ALIAS, decision="rejected") == 1
    assert sidecar.metric("driftloop_retrain_runs_total", model=ALIAS, outcome="rejected") == 1
