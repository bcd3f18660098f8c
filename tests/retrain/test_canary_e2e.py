"""Canary releases on one box (`serve`), through the real sidecar and the real vLLM.

Production is a LoRA (v1). A candidate first serves half of the alias's conversations, split by
the sidecar per conversation; the loop's tick then decides on the captured live rows:

- another random LoRA (v2): nothing worse on either side, so it is promoted;
- a LoRA trained here to refuse everything: its refusal rate on the canary share is
  significantly worse, so it is rolled back automatically, with the numbers in its decision row,
  while production's share never left v1.
"""

from __future__ import annotations

import pytest
from openai import OpenAI

from driftloop.demo.story import tech_support_traffic
from monitor.vllm_admin import VLLMAdmin
from retrain.adapter_registry import AdapterRegistry, Status
from retrain.control import LoopControl
from tests.conftest import CACHE_DIR, SERVED_NAME
from tests.loras import REFUSAL, random_lora, refusal_lora

pytestmark = [pytest.mark.vllm, pytest.mark.slow, pytest.mark.timeout(1200)]
ALIAS = "support"


@pytest.fixture(scope="module")
def loras(smollm2_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("canary-loras")
    return {
        "v1": random_lora(smollm2_dir, root / "v1", seed=1),
        "v2": random_lora(smollm2_dir, root / "v2", seed=2),
        "refuses": refusal_lora(smollm2_dir, CACHE_DIR / "loras" / "refuses"),
    }


@pytest.fixture
def service(start_sidecar, vllm_server, smollm2_dir, loras):
    sidecar = start_sidecar(
        vllm_server.base_url,
        upstream_api_key=vllm_server.api_key,
        aliases={ALIAS: SERVED_NAME},
        drift={"enabled": False},
        judges={"enabled": False},
        retrain={
            "interval_s": 3600,
            "base_model_dir": str(smollm2_dir),
            "volume_examples": None,
            "quality_bar": None,
            "canary_share": 0.5,
            "canary_min_requests": 25,
        },
    )
    retrain = sidecar.parts.retrain
    assert retrain is not None
    registry = AdapterRegistry(sidecar.parts.store)

    def staged(label: str):
        adapter_id = f"{label}-canary"
        registry.register(ALIAS, adapter_id, str(loras[label]), dataset_id=None, run_id=None)
        registry.transition(adapter_id, Status.EVALUATING, actor="loop", reason="trained")
        return registry.transition(adapter_id, Status.STAGING, actor="loop", reason="gate")

    production = retrain.loop.deployer.deploy(staged("v1"), actor="loop", reason="v1").adapter
    assert production is not None and production.served_name == f"{ALIAS}-v1"
    yield sidecar, retrain.loop, LoopControl(retrain.loop), staged
    with VLLMAdmin(vllm_server.base_url, api_key=vllm_server.api_key) as admin:
        for name in admin.loaded_adapters():
            admin.unload(name)


def openings(n: int, seed: int) -> list[str]:
    """``n`` distinct opening prompts: one conversation each."""
    return list(dict.fromkeys(tech_support_traffic(4 * n, seed=seed)))[:n]


def converse(url: str, openings: list[str], turns: int = 2) -> None:
    client = OpenAI(base_url=f"{url}/v1", api_key="x", max_retries=0)
    for opening in openings:
        messages = [{"role": "user", "content": opening}]
        for _ in range(turns):
            reply = client.chat.completions.create(
                model=ALIAS, messages=messages, max_tokens=16, temperature=0
            )
            messages += [
                {"role": "assistant", "content": reply.choices[0].message.content or ""},
                {"role": "user", "content": "And then?"},
            ]


def test_a_canary_splits_by_conversation_and_is_promoted_on_live_data(service):
    sidecar, loop, control, staged = service
    candidate = staged("v2")
    control.start_canary(candidate.id, actor="operator", reason="try v2")
    converse(sidecar.url, openings(40, seed=3))
    sidecar.flush()

    rows = sidecar.rows(
        "SELECT session_key, list(DISTINCT served_model), count(*) FROM requests"
        " WHERE model_alias = ? GROUP BY session_key",
        [ALIAS],
    )
    assert all(len(served) == 1 and n == 2 for _, served, n in rows), rows  # one version each
    sides = [served[0] for _, served, _ in rows]
    print("conversations on the candidate:", sides.count(candidate.served_name), "of", len(sides))
    assert set(sides) == {f"{ALIAS}-v1", candidate.served_name}
    assert 0.25 < sides.count(candidate.served_name) / len(sides) < 0.75

    loop.tick()
    [decision] = control.canaries(ALIAS, 5)["history"]
    print("decision:", decision["reason"])
    assert decision["state"] == "promoted", decision
    assert decision["numbers"]["n_candidate"] >= 25 and decision["numbers"]["n_production"] >= 25
    assert sidecar.parts.aliases.resolve(ALIAS, "any conversation") == candidate.served_name
    assert sidecar.parts.aliases.canaries() == {}
    assert sidecar.metric("driftloop_canary_decisions_total", model=ALIAS, decision="promoted") == 1


def test_a_candidate_that_refuses_live_is_rolled_back_with_its_numbers(service):
    sidecar, loop, control, staged = service
    candidate = staged("refuses")
    control.start_canary(candidate.id, actor="operator", reason="try the refuser")
    converse(sidecar.url, openings(40, seed=4), turns=1)
    sidecar.flush()

    loop.tick()
    [decision] = control.canaries(ALIAS, 5)["history"]
    print("decision:", decision["reason"])
    assert decision["state"] == "rolled_back", decision
    checks = {c["name"]: c for c in decision["numbers"]["checks"]}
    refusal = checks["refusal_rate"]
    assert refusal["regression"] and refusal["candidate"] > 0.5 > refusal["production"]
    assert decision["numbers"]["candidate"] == candidate.served_name
    assert sidecar.metric("driftloop_rollbacks_total", model=ALIAS, reason="automatic") == 1
    assert AdapterRegistry(sidecar.parts.store).get(candidate.id).status is Status.REJECTED
    assert sidecar.parts.aliases.canaries() == {}

    # Production's side never left v1, and after the rollback everything is v1 again.
    served = sidecar.rows(
        "SELECT DISTINCT served_model FROM requests WHERE model_alias = ?", [ALIAS]
    )
    assert {s for (s,) in served} == {f"{ALIAS}-v1", candidate.served_name}
    refused = sidecar.rows(
        "SELECT count(*) FROM requests WHERE served_model = ? AND response_text LIKE ?",
        [f"{ALIAS}-v1", f"%{REFUSAL[:12]}%"],
    )
    assert refused == [(0,)]
    converse(sidecar.url, openings(6, seed=5), turns=1)
    sidecar.flush()
    [(after,)] = sidecar.rows(
        "SELECT count(*) FROM requests WHERE served_model = ?", [candidate.served_name]
    )
    assert after == refusal["n_candidate"]  # nothing more went to the candidate
