"""Rollouts across two real vLLM replicas, each behind its own sidecar process, one controller.

The controller's DuckDB is prepared with staged versions before it starts (the retrain loop's
training is covered by tests/retrain; here the subject is shipping). Replica ``b`` is a second
real vLLM started with ``--max-lora-rank 8``: a rank-16 version is one it really refuses.

- A promoted version is published to SeaweedFS, both agents load it from there, and only then
  does the route switch: answers through either sidecar come from the new version.
- Replica ``b`` refusing a version stops the rollout, named with vLLM's reason; nothing switches
  and replica ``a`` drops the version again.
- The controller killed (failpoint) after every replica loaded a version but before the switch:
  the restarted controller fails that deployment, routes the alias as the registry says, and
  every sidecar converges on that one table while the agents unload the orphan.
- Canaries across the fleet: both sidecars split the alias per conversation, the controller
  decides on the rows it ingested from both: a sound candidate is promoted (both sidecars then
  answer with it), one trained to refuse is rolled back with its numbers, and production's share
  never left the old version.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from openai import OpenAI

from driftloop.demo.story import tech_support_traffic
from driftloop.schema import MIGRATIONS
from driftloop.vllm_process import VLLMServer
from monitor.failpoints import ENV as FAILPOINT
from monitor.store import Store
from monitor.vllm_admin import VLLMAdmin
from retrain.adapter_registry import AdapterRegistry, Status
from tests import polling
from tests.conftest import CACHE_DIR, SERVED_NAME, running_vllm
from tests.fleet.processes import RoleProcess, role_process, seaweedfs
from tests.loras import REFUSAL, random_lora, refusal_lora

pytestmark = [pytest.mark.vllm, pytest.mark.slow, pytest.mark.timeout(900)]
ALIASES = {"support": SERVED_NAME, "billing": SERVED_NAME}
PROMPT = [{"role": "user", "content": "Name a colour."}]


@dataclass
class Fleet:
    controller: RoleProcess
    sidecars: dict[str, RoleProcess]
    vllms: dict[str, VLLMServer]
    staged: dict[str, str]  # what the test staged -> adapter id

    def answer(self, sidecar: str, model: str) -> str:
        client = OpenAI(base_url=self.sidecars[sidecar].url + "/v1", api_key="k", max_retries=0)
        reply = client.chat.completions.create(
            model=model, messages=PROMPT, max_tokens=12, temperature=0
        )
        return reply.choices[0].message.content or ""

    def direct(self, replica: str, model: str) -> str:
        server = self.vllms[replica]
        client = OpenAI(base_url=f"{server.base_url}/v1", api_key=server.api_key, max_retries=0)
        reply = client.chat.completions.create(
            model=model, messages=PROMPT, max_tokens=12, temperature=0
        )
        return reply.choices[0].message.content or ""

    def loaded(self, replica: str) -> dict[str, str]:
        server = self.vllms[replica]
        with VLLMAdmin(server.base_url, api_key=server.api_key) as admin:
            return admin.loaded_adapters()

    def agents_live(self) -> bool:
        reports = self.controller.call("GET", "/api/v1/fleet/sidecars").json()["adapters"]
        return all(reports.get(s, {}).get("live") for s in self.sidecars)

    def routing_version(self) -> int:
        return self.controller.call("GET", "/api/v1/fleet/sidecars").json()["routing_version"]

    def converged(self) -> bool:
        """Every sidecar applies the controller's routing version."""
        version = self.routing_version()
        applied = {s.metric("driftloop_routing_applied_version") for s in self.sidecars.values()}
        return applied == {float(version)}

    def route(self, alias: str) -> str:
        table = self.controller.call("GET", "/api/v1/fleet/routing", params={"sidecar": "test"})
        return table.json()["aliases"][alias]

    def converse(self, openings: list[str]) -> None:
        """One request per opening, alternating between the sidecars (a load balancer)."""
        names = sorted(self.sidecars)
        for i, opening in enumerate(openings):
            client = OpenAI(
                base_url=self.sidecars[names[i % 2]].url + "/v1", api_key="k", max_retries=0
            )
            client.chat.completions.create(
                model="support",
                messages=[{"role": "user", "content": opening}],
                max_tokens=16,
                temperature=0,
            )

    def start_canary(self, label: str) -> str:
        """Start the staged version's canary; return its served name once both sidecars split."""
        reply = self.controller.call(
            "POST",
            f"/api/v1/adapters/{self.staged[label]}/canary",
            json={"reason": f"canary of {label}"},
            timeout=180,
        )
        assert reply.status_code == 200, reply.text
        polling.wait_until(self.converged, what="both sidecars to run the canary", timeout_s=30)
        return str(reply.json()["canary"])

    def canary_decision(self) -> dict | None:
        history = self.controller.call("GET", "/api/v1/canaries").json()["history"]
        return history[0] if history and history[0]["state"] != "running" else None

    def promote(self, adapter_id: str, reason: str) -> httpx.Response:
        return self.controller.call(
            "POST", f"/api/v1/adapters/{adapter_id}/promote", json={"reason": reason}, timeout=180
        )


def stage(db: Path, versions: dict[str, tuple[str, Path]]) -> dict[str, str]:
    """Register each (alias, folder) as a staged version in the controller's DuckDB file."""
    store = Store.open(db, migrations=MIGRATIONS)
    registry = AdapterRegistry(store)
    ids = {}
    try:
        for label, (alias, folder) in versions.items():
            adapter_id = f"{label}-{secrets.token_hex(4)}"
            registry.register(alias, adapter_id, str(folder), dataset_id=None, run_id=None)
            registry.transition(adapter_id, Status.EVALUATING, actor="loop", reason="trained")
            registry.transition(adapter_id, Status.STAGING, actor="loop", reason="gate passed")
            ids[label] = adapter_id
    finally:
        store.close()
    return ids


@pytest.fixture(scope="module")
def replica_b(smollm2_dir: Path) -> Iterator[VLLMServer]:
    with running_vllm(smollm2_dir, "test-vllm-b.log", max_lora_rank=8) as server:
        yield server


@pytest.fixture
def fleet(vllm_server, replica_b, smollm2_dir, tmp_path_factory) -> Iterator[Fleet]:
    root = tmp_path_factory.mktemp("rollout")
    loras = root / "loras"
    staged = stage(
        root / "controller" / "controller.duckdb",
        {
            "support-rank8": ("support", random_lora(smollm2_dir, loras / "s8", seed=1)),
            "support-rank16": ("support", random_lora(smollm2_dir, loras / "s16", 2, rank=16)),
            "billing-rank8": ("billing", random_lora(smollm2_dir, loras / "b8", seed=3)),
            "canary-sound": ("support", random_lora(smollm2_dir, loras / "c", seed=4)),
            "canary-refuses": (
                "support",
                refusal_lora(smollm2_dir, CACHE_DIR / "loras" / "refuses"),
            ),
        },
    )
    vllms = {"a": vllm_server, "b": replica_b}
    with seaweedfs(root / "s3") as store:
        controller = role_process(
            root / "controller",
            "controller",
            store,
            aliases=ALIASES,
            sidecar={"upstream_url": vllm_server.base_url},
            vllm={"launch": False, "api_key_env": "FLEET_TEST_VLLM_KEY"},
            retrain={
                "enabled": True,
                # The tick decides canaries. No trigger can trip: drift and judges are off and
                # no feedback arrives.
                "interval_s": 2,
                "base_model_dir": str(smollm2_dir),
                "canary_share": 0.5,
                "canary_min_requests": 15,
            },
            fleet={"eval_sidecar": "a", "live_after_s": 5, "rollout_timeout_s": 120},
        )
        controller.env["FLEET_TEST_VLLM_KEY"] = vllm_server.api_key
        sidecars = {}
        for name, server in vllms.items():
            sidecars[name] = role_process(
                root / name,
                "sidecar",
                store,
                aliases=ALIASES,
                sidecar={"upstream_url": server.base_url},
                capture={"flush_interval_s": 0.2},
                vllm={"launch": False, "api_key_env": "FLEET_TEST_VLLM_KEY"},
                fleet={
                    "sidecar_id": name,
                    "controller_url": controller.api,
                    "routing_poll_s": 0.5,
                    "agent_interval_s": 1.0,
                    "shard_max_age_s": 0.5,
                    "adapter_cache_dir": str(root / name / "adapters"),
                },
            )
            sidecars[name].env["FLEET_TEST_VLLM_KEY"] = server.api_key
        every = [controller, *sidecars.values()]
        try:
            for process in every:
                process.start()
            running = Fleet(controller, sidecars, vllms, staged)
            polling.wait_until(running.agents_live, what="both agents to report", timeout_s=60)
            yield running
        finally:
            for process in reversed(every):
                process.stop()
            for server in vllms.values():  # the next test's registry starts again at v1
                with VLLMAdmin(server.base_url, api_key=server.api_key) as admin:
                    for name in admin.loaded_adapters():
                        admin.unload(name)


def test_a_version_switches_only_once_both_replicas_hold_it_and_a_refusal_stops_it(fleet):
    base = fleet.answer("a", "support")

    reply = fleet.promote(fleet.staged["support-rank8"], "first fleet rollout")
    assert reply.status_code == 200, reply.text
    assert reply.json()["serving"] == "support-v1"
    for replica in ("a", "b"):
        root = Path(fleet.loaded(replica)["support-v1"])
        assert root.parent == fleet.sidecars[replica].config_path.parent / "adapters"
    lineage = fleet.controller.call(
        "GET", f"/api/v1/adapters/{fleet.staged['support-rank8']}"
    ).json()["adapter"]
    assert lineage["object_key"].startswith("adapters/support/support-v1-")
    assert lineage["object_key"].endswith(lineage["digest"][:16])
    polling.wait_until(fleet.converged, what="both sidecars to switch", timeout_s=30)
    version = fleet.routing_version()
    new = fleet.direct("a", "support-v1")
    assert new != base
    assert fleet.answer("a", "support") == fleet.answer("b", "support") == new

    # Replica b's vLLM (max LoRA rank 8) refuses the rank-16 version: nothing switches.
    reply = fleet.promote(fleet.staged["support-rank16"], "too big for b")
    assert reply.status_code == 502, reply.text
    print("refusal:", reply.json()["detail"])
    assert "sidecar b cannot load support-v2" in reply.json()["detail"]
    assert "rank" in reply.json()["detail"].lower()
    assert fleet.route("support") == "support-v1"
    assert fleet.converged() and fleet.routing_version() == version  # no new table was made
    assert fleet.answer("a", "support") == fleet.answer("b", "support") == new
    polling.wait_until(
        lambda: "support-v2" not in fleet.loaded("a"), what="a to drop v2", timeout_s=30
    )
    deployments = fleet.controller.call(
        "GET", f"/api/v1/adapters/{fleet.staged['support-rank16']}"
    ).json()["deployments"]
    assert [d["state"] for d in deployments] == ["failed"]
    assert "sidecar b" in deployments[0]["reason"]

    # A rollback goes through the same path: the base serves on both replicas again.
    reply = fleet.controller.call(
        "POST", "/api/v1/models/support/rollback", json={"reason": "test"}, timeout=60
    )
    assert reply.status_code == 200, reply.text
    polling.wait_until(
        lambda: fleet.routing_version() > version and fleet.converged(),
        what="the rollback to reach both",
        timeout_s=30,
    )
    assert fleet.answer("a", "support") == fleet.answer("b", "support") == base


def test_a_controller_killed_between_loaded_and_switch_reconciles_every_sidecar(fleet):
    fleet.controller.stop()
    fleet.controller.env[FAILPOINT] = "deploy.after_load"
    fleet.controller.start()
    polling.wait_until(fleet.agents_live, what="both agents to report", timeout_s=60)
    with pytest.raises(httpx.HTTPError):
        fleet.promote(fleet.staged["billing-rank8"], "dies before the switch")
    assert fleet.controller.process is not None
    assert fleet.controller.process.wait(30) == -9
    assert "billing-v1" in fleet.loaded("a") and "billing-v1" in fleet.loaded("b")

    del fleet.controller.env[FAILPOINT]
    fleet.controller.start()
    polling.wait_until(fleet.converged, what="both sidecars to converge", timeout_s=30)
    assert fleet.route("billing") == SERVED_NAME
    polling.wait_until(
        lambda: not any("billing-v1" in fleet.loaded(r) for r in ("a", "b")),
        what="both agents to unload the orphan",
        timeout_s=30,
    )
    deployments = fleet.controller.call(
        "GET", f"/api/v1/adapters/{fleet.staged['billing-rank8']}"
    ).json()["deployments"]
    assert [(d["state"], d["reason"]) for d in deployments] == [
        ("failed", "interrupted before the alias switch; reconciled")
    ]
    assert (
        fleet.answer("a", "billing")
        == fleet.answer("b", "billing")
        == fleet.direct("a", SERVED_NAME)
    )


def test_fleet_canaries_promote_a_sound_version_and_roll_back_one_that_fails_live(fleet):
    assert fleet.promote(fleet.staged["support-rank8"], "production").status_code == 200
    openings = list(dict.fromkeys(tech_support_traffic(200, seed=6)))

    sound = fleet.start_canary("canary-sound")
    fleet.converse(openings[:40])
    decision = polling.wait_until(fleet.canary_decision, what="a decision", timeout_s=120)
    print("sound canary:", decision["reason"])
    assert decision["state"] == "promoted", decision
    numbers = decision["numbers"]
    assert min(numbers["n_candidate"], numbers["n_production"]) >= 15
    polling.wait_until(fleet.converged, what="both sidecars to switch", timeout_s=30)
    assert fleet.route("support") == sound
    assert fleet.answer("a", "support") == fleet.answer("b", "support") == fleet.direct("a", sound)

    refuser = fleet.start_canary("canary-refuses")
    fleet.converse(openings[40:80])
    decision = polling.wait_until(fleet.canary_decision, what="a decision", timeout_s=120)
    print("refusing canary:", decision["reason"])
    assert decision["state"] == "rolled_back", decision
    checks = {c["name"]: c for c in decision["numbers"]["checks"]}
    assert checks["refusal_rate"]["regression"]
    assert checks["refusal_rate"]["candidate"] > 0.5
    assert checks["refusal_rate"]["production"] == 0  # the other share stayed on production
    assert decision["numbers"]["production"] == sound
    polling.wait_until(fleet.converged, what="both sidecars to drop the canary", timeout_s=30)
    assert fleet.route("support") == sound
    for replica in ("a", "b"):
        assert not fleet.answer(replica, "support").startswith(REFUSAL[:12])
    polling.wait_until(
        lambda: all(refuser not in fleet.loaded(r) for r in ("a", "b")),
        what="both agents to unload the refuser",
        timeout_s=30,
    )
