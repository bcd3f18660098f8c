"""Deployments against the real vLLM: versioned names, atomic alias switch, rollback, reconcile."""

from pathlib import Path

import pytest
from openai import OpenAI
from prometheus_client import CollectorRegistry

from driftloop.schema import MIGRATIONS
from monitor.aliases import AliasTable
from monitor.store import Store
from monitor.vllm_admin import VLLMAdmin, VLLMAdminError
from retrain.adapter_registry import AdapterRegistry, AdapterRegistryError, Status
from retrain.metrics import LoopMetrics
from retrain.serving.deploy import Deployer
from tests.loras import random_lora

pytestmark = pytest.mark.vllm
PROMPT = [{"role": "user", "content": "Name a colour."}]


@pytest.fixture(scope="module")
def loras(smollm2_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("loras")
    return [random_lora(smollm2_dir, root / f"lora{i}", seed=i) for i in (1, 2)]


@pytest.fixture
def deployer(vllm_server, tmp_path):
    store = Store.open(tmp_path / "d.duckdb", migrations=MIGRATIONS)
    registry = CollectorRegistry()
    aliases = AliasTable({"support": "smollm2"})
    admin = VLLMAdmin(vllm_server.base_url, api_key=vllm_server.api_key)
    d = Deployer(
        AdapterRegistry(store), admin, aliases, LoopMetrics(registry), base_model="smollm2"
    )
    d.prom = registry  # for assertions
    yield d
    for name in admin.loaded_adapters():
        admin.unload(name)
    admin.close()
    store.close()


def staged(registry: AdapterRegistry, adapter_id: str, path: Path):
    registry.register("support", adapter_id, str(path), dataset_id=None, run_id=None)
    registry.transition(adapter_id, Status.EVALUATING, actor="loop", reason="trained")
    return registry.transition(adapter_id, Status.STAGING, actor="loop", reason="gate passed")


def answer(server, model: str) -> str:
    client = OpenAI(base_url=f"{server.base_url}/v1", api_key=server.api_key, max_retries=0)
    reply = client.chat.completions.create(
        model=model, messages=PROMPT, max_tokens=12, temperature=0
    )
    return reply.choices[0].message.content or ""


def test_deploy_rollback_and_metrics(deployer, loras, vllm_server):
    registry = deployer.adapters
    v1 = staged(registry, "lora0001", loras[0])
    route = deployer.deploy(v1, actor="loop", reason="first")
    assert route.served_name == "support-v1"
    assert deployer.aliases.resolve("support") == "support-v1"
    assert "support-v1" in deployer.admin.loaded_adapters()
    # the adapter really serves: its answer differs from the base model's
    assert answer(vllm_server, "support-v1") != answer(vllm_server, "smollm2")
    # a name is never reused for other weights (stale prefix cache, wrong answers)
    with pytest.raises(VLLMAdminError, match="already serves 'support-v1'"):
        deployer.admin.load("support-v1", str(loras[1]))

    v2 = staged(registry, "lora0002", loras[1])
    deployer.deploy(v2, actor="loop", reason="second")
    assert deployer.aliases.resolve("support") == "support-v2"
    assert registry.get("lora0001").status is Status.DEPRECATED
    assert (
        deployer.prom.get_sample_value(
            "driftloop_deployed_adapter_info", {"model": "support", "adapter": "support-v2"}
        )
        == 1
    )
    assert (
        deployer.prom.get_sample_value(
            "driftloop_deployed_adapter_info", {"model": "support", "adapter": "support-v1"}
        )
        is None
    )

    route = deployer.rollback("support", actor="operator", reason="complaints")
    assert route.served_name == "support-v1" and deployer.aliases.resolve("support") == "support-v1"
    assert registry.get("lora0002").status is Status.DEPRECATED
    assert registry.get("lora0001").status is Status.PRODUCTION
    assert (
        deployer.prom.get_sample_value(
            "driftloop_rollbacks_total", {"model": "support", "reason": "manual"}
        )
        == 1
    )
    actions = deployer.store.query("SELECT action, state FROM deployments ORDER BY id")
    assert actions == [("deploy", "switched"), ("deploy", "switched"), ("rollback", "switched")]

    deployer.rollback("support", actor="operator", reason="back to base")
    assert deployer.aliases.resolve("support") == "smollm2"
    with pytest.raises(AdapterRegistryError, match="nothing to roll back"):
        deployer.rollback("support", actor="operator", reason="again")


def test_a_corrupt_adapter_is_refused_and_nothing_switches(deployer, tmp_path):
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "adapter_config.json").write_text("{not json")
    (bad / "adapter_model.safetensors").write_bytes(b"\x00" * 10)
    adapter = staged(deployer.adapters, "badbad01", bad)
    with pytest.raises(VLLMAdminError, match="vLLM refused POST /v1/load_lora_adapter"):
        deployer.deploy(adapter, actor="loop", reason="try")
    assert deployer.aliases.resolve("support") == "smollm2"
    assert deployer.adapters.get("badbad01").status is Status.STAGING
    [(state, reason)] = deployer.store.query("SELECT state, reason FROM deployments")
    assert state == "failed" and "load failed" in reason


def test_reconcile_after_a_crash_between_load_and_switch(deployer, loras):
    registry = deployer.adapters
    v1 = staged(registry, "lora0001", loras[0])
    deployer.deploy(v1, actor="loop", reason="first")
    v2 = staged(registry, "lora0002", loras[1])
    # what a crash leaves: v2 loaded, a 'loading' row, the registry and alias not switched yet
    deployer.deployments.begin(
        "support", v2.id, v2.served_name, "support-v1", "deploy", "loop", "second"
    )
    deployer.admin.load(v2.served_name, v2.path)
    fresh = AliasTable({"support": "smollm2"})  # a restarted process starts from config
    deployer.aliases = fresh
    route = deployer.reconcile("support")
    assert route.served_name == "support-v1" and fresh.resolve("support") == "support-v1"
    assert registry.get(v2.id).status is Status.STAGING  # still promotable by an operator
    states = deployer.store.query("SELECT state FROM deployments ORDER BY id")
    assert states == [("switched",), ("failed",)]


def test_a_deployer_without_vllms_key_is_refused_and_nothing_switches(vllm_server, loras, tmp_path):
    store = Store.open(tmp_path / "nokey.duckdb", migrations=MIGRATIONS)
    aliases = AliasTable({"support": "smollm2"})
    with VLLMAdmin(vllm_server.base_url) as anonymous:
        d = Deployer(
            AdapterRegistry(store),
            anonymous,
            aliases,
            LoopMetrics(CollectorRegistry()),
            base_model="smollm2",
        )
        adapter = staged(d.adapters, "lora0001", loras[0])
        with pytest.raises(VLLMAdminError, match=r"\(401\)"):
            d.deploy(adapter, actor="loop", reason="no key")
    assert aliases.resolve("support") == "smollm2"
    [(state, reason)] = store.query("SELECT state, reason FROM deployments")
    assert state == "failed" and "401" in reason and vllm_server.api_key not in reason
    store.close()
