"""The service process: SIGTERM while vLLM is still starting leaves no vLLM behind."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from driftloop.vllm_process import free_port

pytestmark = [pytest.mark.slow, pytest.mark.vllm]


def _processes_with(needle: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if needle in (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode():
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


def test_sigterm_during_vllm_start_stops_vllm(tmp_path, smollm2_dir):
    vllm_port = free_port()
    env = {
        **os.environ,
        "DRIFTLOOP__VLLM__MODEL_DIR": str(smollm2_dir),
        "DRIFTLOOP__VLLM__PORT": str(vllm_port),
        "DRIFTLOOP__SIDECAR__PORT": str(free_port()),
        "DRIFTLOOP__API__PORT": str(free_port()),
        "DRIFTLOOP__CAPTURE__DB_PATH": str(tmp_path / "c.duckdb"),
        "DRIFTLOOP__CACHE_DIR": str(tmp_path / "cache"),
        "DRIFTLOOP__DRIFT__ENABLED": "false",
        "DRIFTLOOP_API_TOKEN": "t" * 32,
    }
    service = subprocess.Popen([sys.executable, "-m", "driftloop", "serve"], env=env)
    needle = f"--port {vllm_port}"
    deadline = time.monotonic() + 60
    while not _processes_with(needle) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _processes_with(needle), "vLLM never started"
    time.sleep(3)  # vLLM is loading, not yet healthy
    service.send_signal(signal.SIGTERM)
    assert service.wait(60) == 128 + signal.SIGTERM
    deadline = time.monotonic() + 30
    while _processes_with(needle) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _processes_with(needle) == []
