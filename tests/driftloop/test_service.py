"""The service process: SIGTERM while vLLM is still starting leaves no vLLM behind."""

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from driftloop.vllm_process import free_port, process_group_members
from tests.polling import wait_until

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
    vllm_pid = min(  # the API server: it leads the group that its engine joins
        wait_until(
            lambda: _processes_with(needle), what="vLLM to start", timeout_s=60, interval_s=0.2
        )
    )
    # Loading, not yet healthy: its engine process has been spawned (into its process group).
    wait_until(
        lambda: len(process_group_members(vllm_pid)) > 1,
        what="vLLM to spawn its engine process",
        timeout_s=60,
        interval_s=0.2,
    )
    service.send_signal(signal.SIGTERM)
    assert service.wait(60) == 128 + signal.SIGTERM
    wait_until(
        lambda: not _processes_with(needle) and not process_group_members(vllm_pid),
        what="vLLM and its engine to exit",
        timeout_s=30,
        interval_s=0.2,
    )
