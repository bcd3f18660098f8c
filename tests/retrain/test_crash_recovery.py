"""Crashes of the real service process: kill -9 of the trainer, kill -9 between vLLM load and the
alias switch; after a restart the registry, vLLM and the alias agree and nothing is half-shipped.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from driftloop.demo.story import house_format_feedback, write_seed_dataset
from driftloop.vllm_process import free_port
from monitor.vllm_admin import VLLMAdmin
from tests.retrain.processes import training_children

pytestmark = [pytest.mark.vllm, pytest.mark.slow, pytest.mark.timeout(1800)]
TOKEN = "c" * 32
ALIAS = "helpdesk"


def start_service(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    handle = log.open("ab")
    return subprocess.Popen(
        [sys.executable, "-m", "driftloop", "serve"],
        env=env,
        stdout=handle,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def wait_api(api: httpx.Client, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"service exited {process.returncode}:\n{log.read_text()[-3000:]}")
        try:
            if api.get("/api/v1/status").status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    pytest.fail(f"service API did not come up:\n{log.read_text()[-3000:]}")


def wait_run(api: httpx.Client, status: str, timeout: float = 600) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        runs = api.get("/api/v1/retrain/runs", params={"model": ALIAS}).json()
        if runs and runs[0]["status"] == status:
            return runs[0]
        time.sleep(1)
    pytest.fail(f"no run reached {status}: {runs}")


@pytest.fixture
def service_env(vllm_server, smollm2_dir, tmp_path):
    api_port = free_port()
    env = {
        **os.environ,
        "DRIFTLOOP_API_TOKEN": TOKEN,
        "DRIFTLOOP__VLLM__LAUNCH": "false",
        "DRIFTLOOP__VLLM__SERVED_MODEL_NAME": vllm_server.served_model_name,
        "DRIFTLOOP__SIDECAR__UPSTREAM_URL": vllm_server.base_url,
        "DRIFTLOOP_VLLM_API_KEY": vllm_server.api_key,  # vllm.api_key_env's default name
        "DRIFTLOOP__SIDECAR__PORT": str(free_port()),
        "DRIFTLOOP__API__PORT": str(api_port),
        "DRIFTLOOP__CAPTURE__DB_PATH": str(tmp_path / "service.duckdb"),
        "DRIFTLOOP__CACHE_DIR": str(tmp_path / "cache"),
        "DRIFTLOOP__ALIASES": f'{{"{ALIAS}": "{vllm_server.served_model_name}"}}',
        "DRIFTLOOP__DRIFT__ENABLED": "false",
        "DRIFTLOOP__JUDGES__ENABLED": "false",
        "DRIFTLOOP__RETRAIN__INTERVAL_S": "3600",
        "DRIFTLOOP__RETRAIN__COOLDOWN_S": "0",
        "DRIFTLOOP__RETRAIN__SEED_DATASET": str(write_seed_dataset(tmp_path / "seed.jsonl")),
        "DRIFTLOOP__RETRAIN__BASE_MODEL_DIR": str(smollm2_dir),
        "DRIFTLOOP__RETRAIN__MAX_STEPS": "6",
        "DRIFTLOOP__RETRAIN__GATE_MIN_IMPROVEMENT": "0",
        "DRIFTLOOP__RETRAIN__GATE_MARGIN": "0.9",
        "DRIFTLOOP__RETRAIN__GATE_MAX_TOKENS": "8",
    }
    api = httpx.Client(
        base_url=f"http://127.0.0.1:{api_port}",
        headers={"Authorization": f"Bearer {TOKEN}"},
        timeout=30,
    )
    admin = VLLMAdmin(vllm_server.base_url, api_key=vllm_server.api_key)
    yield env, api, admin
    for name in admin.loaded_adapters():
        admin.unload(name)
    admin.close()
    api.close()


def test_kill_9_of_trainer_and_of_service_mid_deploy_reconcile(service_env, tmp_path):
    env, api, admin = service_env
    log = tmp_path / "service.log"
    service = start_service({**env, "DRIFTLOOP_FAILPOINT": "deploy.after_load"}, log)
    try:
        wait_api(api, service, log)
        for e in house_format_feedback():
            body = {"model": ALIAS, "prompt": e.prompt, "answer": e.answer}
            assert api.post("/api/v1/feedback", json=body).status_code == 201

        # 1. kill -9 of the trainer subprocess: the run fails and names it, nothing registered
        assert api.post("/api/v1/retrain", json={"model": ALIAS, "reason": "t1"}).status_code == 202
        deadline = time.monotonic() + 120
        while not (pids := training_children(service.pid)) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert pids, "the trainer subprocess never started"
        [pid] = pids
        os.kill(pid, signal.SIGKILL)
        failed = wait_run(api, "failed", timeout=120)
        assert "SIGKILL" in failed["error"] or "-9" in failed["error"], failed["error"]
        assert api.get("/api/v1/adapters").json() == []

        # 2. kill -9 of the service between loading the adapter into vLLM and the alias switch
        assert api.post("/api/v1/retrain", json={"model": ALIAS, "reason": "t2"}).status_code == 202
        service.wait(timeout=600)
        assert service.returncode == -signal.SIGKILL, log.read_text()[-3000:]
        assert f"{ALIAS}-v1" in admin.loaded_adapters()  # loaded, never switched to
    finally:
        if service.poll() is None:
            os.killpg(service.pid, signal.SIGKILL)
            service.wait()

    restarted = start_service(env, log)
    try:
        wait_api(api, restarted, log)
        status = api.get("/api/v1/status").json()
        assert status["aliases"][ALIAS] == env["DRIFTLOOP__VLLM__SERVED_MODEL_NAME"]
        [adapter] = api.get("/api/v1/adapters").json()
        assert adapter["status"] == "staging"  # passed the gate, never shipped
        runs = api.get("/api/v1/retrain/runs", params={"model": ALIAS}).json()
        assert [r["status"] for r in runs] == ["failed", "failed"]
        assert "interrupted" in runs[0]["error"]
        lineage = api.get(f"/api/v1/adapters/{adapter['id']}").json()
        assert [d["state"] for d in lineage["deployments"]] == ["failed"]
        # an operator can finish the interrupted rollout explicitly
        reply = api.post(f"/api/v1/adapters/{adapter['id']}/promote", json={"reason": "finish"})
        assert reply.status_code == 200, reply.text
        assert api.get("/api/v1/status").json()["aliases"][ALIAS] == f"{ALIAS}-v1"
    finally:
        restarted.send_signal(signal.SIGTERM)
        try:
            restarted.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(restarted.pid, signal.SIGKILL)
            restarted.wait()
