"""kill -9 of the whole service during sustained capture: the file reopens, losses stay bounded."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

import httpx
import pytest

from benchmarks.upstream_stub import running_stub
from driftloop.vllm_process import free_port
from monitor.store import Store

pytestmark = pytest.mark.slow

FLUSH_INTERVAL_S = 0.5


def test_kill_9_loses_at_most_one_flush_interval(tmp_path):
    db_path = tmp_path / "capture.duckdb"
    port, api_port = free_port(), free_port()
    with running_stub() as stub_port:
        config = tmp_path / "driftloop.toml"
        config.write_text(
            f'[sidecar]\nport = {port}\nupstream_url = "http://127.0.0.1:{stub_port}"\n'
            f'[capture]\ndb_path = "{db_path}"\nflush_interval_s = {FLUSH_INTERVAL_S}\n'
            f"[api]\nport = {api_port}\n[vllm]\nlaunch = false\n"
        )
        env = {**os.environ, "DRIFTLOOP_API_TOKEN": "x" * 32}
        service = subprocess.Popen(
            [sys.executable, "-m", "driftloop", "serve", "--config", str(config)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        url = f"http://127.0.0.1:{port}"
        try:
            _wait_healthy(url, service)
            acked, killed_at = _load_then_kill(url, service, seconds=3.0)
        finally:
            if service.poll() is None:
                service.kill()
            service.wait(10)
    store = Store.open(db_path)  # replays DuckDB's WAL
    written = store.query("SELECT count(*) FROM requests")[0][0]
    store.close()
    lost = len(acked) - written
    # Rows acknowledged in the last flush interval (plus time for one flush) may still have been
    # in memory; anything older must be on disk.
    window = [t for t in acked if t >= killed_at - FLUSH_INTERVAL_S - 0.3]
    rate = len(acked) / 3.0
    print(
        f"\nkill -9 after {len(acked)} acknowledged requests ({rate:.0f}/s): {written} rows on disk,"
        f" {lost} lost; {len(window)} were acknowledged in the last flush interval + 0.3 s"
    )
    assert written > 0
    assert 0 <= lost <= len(window)


def _wait_healthy(url: str, service: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if service.poll() is not None:
            raise AssertionError(service.stderr.read().decode() if service.stderr else "exited")
        try:
            if httpx.get(url + "/healthz", timeout=1).json()["capture"] == "ok":
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise AssertionError("service did not become healthy")


def _load_then_kill(
    url: str, service: subprocess.Popen[bytes], seconds: float
) -> tuple[list[float], float]:
    """Four clients send forced-capture chats; SIGKILL lands while they are still sending."""
    acked: list[float] = []
    stop = threading.Event()

    def client() -> None:
        with httpx.Client(timeout=5) as http:
            while not stop.is_set():
                try:
                    response = http.post(
                        url + "/v1/chat/completions",
                        json={"model": "m", "messages": [{"role": "user", "content": "hi"}]},
                        headers={"x-driftloop-capture": "force"},
                    )
                except httpx.HTTPError:
                    return  # the service is gone
                if response.status_code == 200:
                    acked.append(time.monotonic())

    threads = [threading.Thread(target=client) for _ in range(4)]
    for thread in threads:
        thread.start()
    time.sleep(seconds)  # not a wait for a condition: how long the load runs before the kill
    killed_at = time.monotonic()
    os.kill(service.pid, signal.SIGKILL)
    stop.set()
    for thread in threads:
        thread.join(10)
    return acked, killed_at
