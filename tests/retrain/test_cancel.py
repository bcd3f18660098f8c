"""A run cancelled through the control API while it trains: the real training subprocess (the
tiny Llama) is killed, the run ends ``cancelled`` naming who and why, nothing is registered, and
its progress (step, loss, steps/s) was in the run's timeline and the per-step gauges meanwhile.
"""

from __future__ import annotations

import json
import os

import httpx
import pytest
from prometheus_client import CollectorRegistry

from driftloop.api.app import create_api
from driftloop.api.loop_routes import loop_router
from driftloop.demo.story import house_format_feedback
from driftloop.service import build_components
from retrain.control import LoopControl
from tests import polling
from tests.conftest import make_config
from tests.retrain.processes import training_children
from tests.servers import serve_in_thread

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]
TOKEN = "k" * 32
AUTH = {"Authorization": f"Bearer {TOKEN}"}
ALIAS = "support"


@pytest.fixture
def api(tmp_path, tiny_base):
    cfg = make_config(
        tmp_path,
        aliases={ALIAS: "base"},
        judges={"enabled": False},
        drift={"enabled": False},
        retrain={"base_model_dir": str(tiny_base), "max_steps": 2000, "cooldown_s": 0},
    )
    registry = CollectorRegistry()
    parts = build_components(cfg, "http://127.0.0.1:9", registry)
    assert parts.retrain is not None
    routers = [loop_router(LoopControl(parts.retrain.loop), lambda: {ALIAS})]
    app = create_api(TOKEN, parts.store, parts.sidecar, parts.aliases, routers)
    with serve_in_thread(app) as url:
        yield httpx.Client(base_url=url, headers=AUTH, timeout=10), registry
    parts.close()


def latest_run(client: httpx.Client) -> dict:
    [run] = client.get("/api/v1/retrain/runs", params={"model": ALIAS, "limit": 1}).json()
    return run


def training_progress(run: dict) -> dict | None:
    timeline = run["timeline"] if isinstance(run["timeline"], list) else json.loads(run["timeline"])
    train = [entry for entry in timeline if entry["stage"] == "train"]
    return train[0].get("progress") if train else None


def test_a_run_cancelled_while_training_kills_the_trainer_and_registers_nothing(api):
    client, registry = api
    for example in house_format_feedback()[:24]:
        body = {"model": ALIAS, "prompt": example.prompt, "answer": example.answer}
        assert client.post("/api/v1/feedback", json=body).status_code == 201
    started = client.post("/api/v1/retrain", json={"model": ALIAS, "reason": "t"})
    assert started.status_code == 202, started.text

    def training_or_ended() -> bool:
        run = latest_run(client)
        progress = training_progress(run)
        return run["status"] != "running" or bool(progress and progress["loss"] is not None)

    polling.wait_until(training_or_ended, what="training steps in the timeline", timeout_s=180)
    run = latest_run(client)
    assert run["id"] == started.json()["run"]  # the id the API answered with
    assert run["status"] == "running", run["error"]
    progress = training_progress(run)
    print("progress in the timeline:", progress)
    assert progress["step"] >= 1 and progress["max_steps"] == 2000 and progress["loss"] > 0
    step = registry.get_sample_value("driftloop_training_step", {"model": ALIAS})
    assert step is not None and step >= progress["step"]
    assert registry.get_sample_value("driftloop_training_steps_per_second", {"model": ALIAS})
    [trainer] = training_children(os.getpid())

    cancel = f"/api/v1/retrain/runs/{run['id']}/cancel"
    reply = client.post(cancel, json={"reason": "wrong labels"})
    assert reply.status_code == 202, reply.text
    assert reply.json() == {"run": run["id"], "model": ALIAS, "cancelling": True}
    polling.wait_until(
        lambda: latest_run(client)["status"] != "running", what="the run to end", timeout_s=60
    )

    ended = latest_run(client)
    print("ended:", ended["status"], ended["error"])
    assert ended["status"] == "cancelled"
    assert "cancelled by operator: wrong labels" in ended["error"]
    children = training_children(os.getpid())
    assert trainer not in children and not children
    assert client.get("/api/v1/adapters").json() == []
    assert (
        registry.get_sample_value(
            "driftloop_retrain_runs_total", {"model": ALIAS, "outcome": "cancelled"}
        )
        == 1
    )
    again = client.post(cancel, json={"reason": "twice"})
    assert again.status_code == 409 and "not in progress" in again.json()["detail"]
    audit = client.get("/api/v1/audit", params={"limit": 10}).json()
    [row] = [a for a in audit if a["path"] == cancel and a["status_code"] == 202]
    assert json.loads(row["detail"]) == {"run": run["id"], "reason": "wrong labels"}
