"""``python -m driftloop serve`` in its own process, for tests that need its RSS or its limits.

Memory and resource-limit tests must measure the service alone, so it runs as a child process
(vllm.launch=false, in front of a stub upstream) and is read through its HTTP endpoints and
``/proc/<pid>/status``.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from driftloop.vllm_process import free_port
from tests import polling

TOKEN = "t" * 32


@dataclass
class ServiceProcess:
    process: subprocess.Popen[bytes]
    url: str
    log_path: Path

    def status_kib(self, field: str) -> int:
        """A ``kB`` field of /proc/<pid>/status: VmRSS (now) or VmHWM (the peak so far)."""
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
        raise AssertionError(f"/proc/{self.process.pid}/status has no {field}")

    def health(self) -> dict[str, Any]:
        reply = httpx.get(self.url + "/healthz", timeout=5)
        reply.raise_for_status()
        return dict(reply.json())

    def metric(self, name: str, **labels: str) -> float:
        text = httpx.get(self.url + "/metrics", timeout=5).text
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == name and sample.labels == labels:
                    return float(sample.value)
        return 0.0

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def wait_until(predicate: Callable[[], bool], what: str, timeout_s: float = 60.0) -> None:
    """Poll ``predicate`` until it holds; fail naming ``what`` at the deadline."""
    polling.wait_until(predicate, what=what, timeout_s=timeout_s)


def _toml(sections: dict[str, dict[str, Any]]) -> str:
    lines = []
    for section, values in sections.items():
        lines.append(f"[{section}]")
        lines += [f"{key} = {json.dumps(value)}" for key, value in values.items()]
    return "\n".join(lines) + "\n"


@contextlib.contextmanager
def serve_process(
    tmp_path: Path,
    upstream_url: str,
    *,
    preexec_fn: Callable[[], None] | None = None,
    env: dict[str, str] | None = None,
    **sections: dict[str, Any],
) -> Iterator[ServiceProcess]:
    """Run the service until the block ends (SIGTERM, then it flushes and exits)."""
    port = free_port()
    config = {
        "sidecar": {"port": port, "upstream_url": upstream_url, **sections.pop("sidecar", {})},
        "capture": {"db_path": str(tmp_path / "capture.duckdb"), **sections.pop("capture", {})},
        "api": {"port": free_port()},
        "vllm": {"launch": False},
        "drift": {"enabled": False},
        "judges": {"enabled": False},
        **sections,
    }
    config_path = tmp_path / "driftloop.toml"
    config_path.write_text(_toml(config))
    log_path = tmp_path / "service.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "driftloop", "serve", "--config", str(config_path)],
            env={**os.environ, "DRIFTLOOP_API_TOKEN": TOKEN, **(env or {})},
            cwd=tmp_path,
            stdout=subprocess.DEVNULL,
            # A pipe, not the log file: a file-size limit set for the test would cut the log.
            stderr=subprocess.PIPE if preexec_fn else log,
            preexec_fn=preexec_fn,
        )
    service = ServiceProcess(process, f"http://127.0.0.1:{port}", log_path)
    drained: list[bytes] = []
    reader = threading.Thread(target=_drain, args=(process, drained), daemon=True)
    reader.start()  # an unread pipe would fill and block the service's logging
    try:
        wait_until(lambda: _answers(service), "the service to answer /healthz")
        yield service
    finally:
        if process.poll() is None:
            process.terminate()
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)
        reader.join(10)
        if drained:
            log_path.write_bytes(b"".join(drained))


def _drain(process: subprocess.Popen[bytes], into: list[bytes]) -> None:
    if process.stderr is not None:
        for line in process.stderr:
            into.append(line)


def _answers(service: ServiceProcess) -> bool:
    if service.process.poll() is not None:
        raise AssertionError(f"the service exited with {service.process.returncode}")
    try:
        service.health()
    except httpx.HTTPError:
        return False
    return True
