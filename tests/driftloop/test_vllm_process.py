"""Tests for driftloop.vllm_process: fast ones against a stand-in server, slow ones on real vLLM."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from driftloop.vllm_process import (
    API_SERVER_MODULE,
    VLLMServer,
    VLLMStartError,
    VLLMUnhealthyError,
    free_port,
    process_group_members,
    wait_healthy,
)

# Stands in for `python -m vllm.entrypoints.openai.api_server`: it reads --model and --port
# and behaves as the model folder's name says. "serve" forks a child into its process group,
# as vLLM forks its engine core, so that stop() has a group to clean up.
FAKE_SERVER = textwrap.dedent(
    """
    import argparse, http.server, os, signal, subprocess, sys, time

    parser = argparse.ArgumentParser()
    parser.add_argument("--model")
    parser.add_argument("--port", type=int)
    args, _ = parser.parse_known_args(sys.argv[3:])
    mode = os.path.basename(args.model)
    print("fake vllm", sys.argv[2], "device", os.environ.get("VLLM_TARGET_DEVICE"), flush=True)
    if mode == "crash":
        for i in range(60):
            print(f"loading line {i}", flush=True)
        sys.exit("ValueError: no config.json in " + args.model)
    if mode == "hang":
        time.sleep(300)
    if mode == "stubborn":
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"])

    class Health(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200 if self.path == "/health" else 404)
            self.end_headers()

    http.server.HTTPServer(("127.0.0.1", args.port), Health).serve_forever()
    """
)


@pytest.fixture
def fake_python(tmp_path: Path) -> str:
    """An executable that runs FAKE_SERVER with the arguments VLLMServer passes to python."""
    script = tmp_path / "fake_vllm.py"
    script.write_text(FAKE_SERVER)
    launcher = tmp_path / "python"
    launcher.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{script}" "$@"\n')
    launcher.chmod(0o755)
    return str(launcher)


def _fake(fake_python: str, tmp_path: Path, mode: str) -> VLLMServer:
    return VLLMServer(tmp_path / mode, "fake", python=fake_python, log_path=tmp_path / "vllm.log")


def test_command_and_environment_carry_the_cpu_and_lora_settings(tmp_path: Path) -> None:
    server = VLLMServer(
        tmp_path / "m",
        "base",
        port=8123,
        max_loras=2,
        max_lora_rank=8,
        kv_cache_gib=3,
        extra_args=["--enforce-eager"],
        env={"VLLM_CPU_OMP_THREADS_BIND": "0-1"},
    )
    command = server.command()
    assert command[:3] == [sys.executable, "-m", API_SERVER_MODULE]
    flags = dict(zip(command[3::2], command[4::2], strict=False))
    assert flags["--model"] == str(tmp_path / "m")
    assert flags["--served-model-name"] == "base"
    assert flags["--port"] == "8123"
    assert flags["--max-model-len"] == "1024"
    assert flags["--dtype"] == "float32"
    assert "--enable-lora" in command
    assert command[command.index("--max-loras") + 1] == "2"
    assert command[command.index("--max-lora-rank") + 1] == "8"
    assert command[-1] == "--enforce-eager"
    env = server.environment()
    assert env["VLLM_TARGET_DEVICE"] == "cpu"
    assert env["VLLM_ALLOW_RUNTIME_LORA_UPDATING"] == "True"
    assert env["VLLM_CPU_KVCACHE_SPACE"] == "3"
    assert env["HF_HUB_OFFLINE"] == env["TRANSFORMERS_OFFLINE"] == "1"
    assert env["VLLM_CPU_OMP_THREADS_BIND"] == "0-1"
    assert server.base_url == "http://127.0.0.1:8123"
    assert server.pid is None


def test_the_api_key_travels_in_the_environment_not_the_command_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("VLLM_API_KEY", "inherited")
    keyed = VLLMServer(tmp_path / "m", "base", api_key="driftloop-only")
    assert keyed.environment()["VLLM_API_KEY"] == "driftloop-only"
    assert not any("driftloop-only" in arg for arg in keyed.command())
    assert "--api-key" not in keyed.command()
    # Without a key of its own the server wants none: an inherited one would lock driftloop out.
    assert "VLLM_API_KEY" not in VLLMServer(tmp_path / "m", "base").environment()


def test_port_zero_picks_a_free_port(tmp_path: Path) -> None:
    server = VLLMServer(tmp_path, "base")
    assert server.port > 0
    assert server.base_url == f"http://127.0.0.1:{server.port}"


def test_start_waits_for_health_and_stop_ends_the_group(fake_python: str, tmp_path: Path) -> None:
    with _fake(fake_python, tmp_path, "serve") as server:
        assert server.pid is not None
        pgid = server.pid
        assert os.getpgid(pgid) == pgid  # its own process group
        assert len(process_group_members(pgid)) == 2  # server and its child
        assert wait_healthy(server.base_url, timeout_s=1) < 1
        assert server.running()
    assert not server.running()
    assert process_group_members(pgid) == []
    log = server.log_path.read_text()
    assert f"fake vllm {API_SERVER_MODULE} device cpu" in log
    server.stop()  # stopping twice is harmless


def test_early_exit_raises_with_the_log_tail(fake_python: str, tmp_path: Path) -> None:
    server = _fake(fake_python, tmp_path, "crash")
    with pytest.raises(VLLMStartError, match="exited") as caught:
        server.start(timeout_s=30)
    message = str(caught.value)
    assert "ValueError: no config.json" in message
    assert "loading line 59" in message
    assert "loading line 10" not in message  # only the tail


def test_timeout_stops_the_process_and_raises(fake_python: str, tmp_path: Path) -> None:
    server = _fake(fake_python, tmp_path, "hang")
    with pytest.raises(VLLMStartError, match="not healthy after 2 s") as caught:
        server.start(timeout_s=2)
    assert "fake vllm" in str(caught.value)
    assert server.pid is not None
    assert process_group_members(server.pid) == []


def test_stop_kills_a_group_that_ignores_sigterm(fake_python: str, tmp_path: Path) -> None:
    server = _fake(fake_python, tmp_path, "stubborn").start(timeout_s=30)
    assert server.pid is not None
    started = time.monotonic()
    server.stop(grace_s=1)
    assert time.monotonic() - started < 5
    assert process_group_members(server.pid) == []
    assert server.returncode == -signal.SIGKILL


def test_wait_healthy_times_out_on_a_closed_port() -> None:
    with pytest.raises(VLLMUnhealthyError, match="not healthy after 1 s"):
        wait_healthy(f"http://127.0.0.1:{free_port()}", timeout_s=1, poll_s=0.1)


def test_process_group_members_ignores_other_groups() -> None:
    with subprocess.Popen(["sleep", "30"], start_new_session=True) as sleeper:
        assert process_group_members(sleeper.pid) == [sleeper.pid]
        sleeper.kill()
    assert process_group_members(sleeper.pid) == []


@pytest.fixture(scope="module")
def tiny_model() -> Path:
    from retrain.training.base_models import build_tiny_llama, cache_dir

    return build_tiny_llama(cache_dir() / "models" / "tiny-llama-seed0", seed=0)


@pytest.mark.vllm
@pytest.mark.slow
def test_real_vllm_serves_the_tiny_model_and_stops(tiny_model: Path, tmp_path: Path) -> None:
    from openai import AuthenticationError, OpenAI

    server = VLLMServer(
        tiny_model, "tiny", max_model_len=512, log_path=tmp_path / "vllm.log", api_key="k" * 32
    )
    with server:  # healthy: /health needs no key
        assert server.pid is not None
        pgid = server.pid
        anonymous = OpenAI(base_url=f"{server.base_url}/v1", api_key="wrong", max_retries=0)
        with pytest.raises(AuthenticationError):
            anonymous.models.list()
        anonymous.close()
        client = OpenAI(base_url=f"{server.base_url}/v1", api_key="k" * 32, max_retries=0)
        assert [model.id for model in client.models.list().data] == ["tiny"]
        reply = client.chat.completions.create(
            model="tiny",
            messages=[{"role": "user", "content": "What is the capital of France?"}],
            max_tokens=8,
            temperature=0,
        )
        assert reply.usage is not None
        assert 0 < reply.usage.completion_tokens <= 8
        assert reply.choices[0].finish_reason in ("length", "stop")
        client.close()
    assert process_group_members(pgid) == []


@pytest.mark.vllm
@pytest.mark.slow
def test_real_vllm_with_a_bad_model_dir_raises_with_its_log(tmp_path: Path) -> None:
    empty = tmp_path / "not-a-model"
    empty.mkdir()
    server = VLLMServer(empty, "broken", log_path=tmp_path / "vllm.log")
    with pytest.raises(VLLMStartError, match="exited") as caught:
        server.start(timeout_s=180)
    # The log tail carries vLLM's own reason.
    assert "Invalid repository ID or local directory" in str(caught.value)
    assert server.pid is not None
    assert process_group_members(server.pid) == []
