"""Real Prometheus and Alertmanager processes on 127.0.0.1 for tests, and a webhook receiver.

Each server gets free ports and its own temp directory, and is stopped (SIGTERM, then SIGKILL)
when its context ends. The configs are the repo's own files, rewritten only where a test must
differ: scrape targets, the webhook URLs, and (``fast_rules``) shorter ``for:`` and intervals.
"""

from __future__ import annotations

import contextlib
import json
import re
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import yaml

from dashboards.prometheus import PrometheusClient
from tests.polling import wait_until

REPO = Path(__file__).resolve().parents[2]
PROMETHEUS_BIN = "/usr/bin/prometheus"
ALERTMANAGER_BIN = "/usr/bin/prometheus-alertmanager"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Received:
    path: str
    at: float  # time.time() on arrival
    body: dict[str, Any]


@dataclass
class Webhook:
    """A real HTTP server that records every JSON body POSTed to it (Alertmanager's webhook)."""

    url: str
    received: list[Received] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def record(self, item: Received) -> None:
        with self._lock:
            self.received.append(item)

    def firing(self, path: str, alertname: str) -> list[Received]:
        with self._lock:
            return [
                r
                for r in self.received
                if r.path == path
                and any(
                    a["labels"].get("alertname") == alertname and a["status"] == "firing"
                    for a in r.body.get("alerts", [])
                )
            ]


@contextlib.contextmanager
def webhook_receiver() -> Iterator[Webhook]:
    hook = Webhook(url="")

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("content-length", 0))
            body = json.loads(self.rfile.read(length) or b"{}")
            hook.record(Received(self.path, time.time(), body))
            self.send_response(200)
            self.send_header("content-length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    hook.url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        yield hook
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def fast_rules(text: str, factor: int = 60) -> str:
    """The rule file with every ``for:`` and group ``interval:`` divided by ``factor`` (10m -> 10s).

    Only for tests that must see alerts fire within seconds; the expressions are untouched.
    """

    def shorter(match: re.Match[str]) -> str:
        amount, unit = int(match.group(2)), match.group(3)
        seconds = amount * {"s": 1, "m": 60, "h": 3600}[unit]
        return f"{match.group(1)}{max(1, seconds // factor)}s"

    return re.sub(r"^(\s+(?:for|interval): )(\d+)([smh])$", shorter, text, flags=re.MULTILINE)


@dataclass
class Server:
    url: str
    process: subprocess.Popen[bytes]
    log_path: Path


def _wait_ready(server: Server, path: str, timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(f"{server.url} exited: {server.log_path.read_text()[-2000:]}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(server.url + path, timeout=1).status_code == 200:
                return
        time.sleep(0.1)
    raise RuntimeError(f"{server.url} not ready: {server.log_path.read_text()[-2000:]}")


@contextlib.contextmanager
def _process(args: list[str], url: str, ready_path: str, log_path: Path) -> Iterator[Server]:
    with log_path.open("wb") as log:
        process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
    server = Server(url, process, log_path)
    try:
        _wait_ready(server, ready_path)
        yield server
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)


@contextlib.contextmanager
def alertmanager(workdir: Path, page_url: str, other_url: str) -> Iterator[Server]:
    """The repo's alerts/alertmanager.yml with its two webhook URLs pointed at the test's."""
    config = yaml.safe_load((REPO / "alerts" / "alertmanager.yml").read_text())
    urls = {"pager": page_url, "tickets": other_url}
    for receiver in config["receivers"]:
        for hook in receiver.get("webhook_configs", []):
            hook["url"] = urls[receiver["name"]]
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "alertmanager.yml").write_text(yaml.safe_dump(config))
    port, cluster = free_port(), free_port()
    args = [
        ALERTMANAGER_BIN,
        f"--config.file={workdir / 'alertmanager.yml'}",
        f"--storage.path={workdir / 'data'}",
        f"--web.listen-address=127.0.0.1:{port}",
        f"--cluster.listen-address=127.0.0.1:{cluster}",
        "--cluster.advertise-address=127.0.0.1:" + str(cluster),
        "--log.level=warn",
    ]
    with _process(args, f"http://127.0.0.1:{port}", "/-/ready", workdir / "am.log") as server:
        yield server


@contextlib.contextmanager
def prometheus(
    workdir: Path,
    targets: dict[str, str],
    alertmanager_url: str,
    rules_text: str,
    interval: str = "1s",
) -> Iterator[Server]:
    """deploy/prometheus.yml with the test's targets (job -> host:port) and a 1 s cadence."""
    config = yaml.safe_load((REPO / "deploy" / "prometheus.yml").read_text())
    config["global"].update(scrape_interval=interval, evaluation_interval=interval)
    config["scrape_configs"] = [
        {"job_name": job, "static_configs": [{"targets": [target]}]}
        for job, target in targets.items()
    ]
    config["alerting"]["alertmanagers"] = [
        {"static_configs": [{"targets": [alertmanager_url.removeprefix("http://")]}]}
    ]
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "driftloop.rules.yml").write_text(rules_text)
    config["rule_files"] = [str(workdir / "driftloop.rules.yml")]
    (workdir / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = free_port()
    args = [
        PROMETHEUS_BIN,
        f"--config.file={workdir / 'prometheus.yml'}",
        f"--storage.tsdb.path={workdir / 'data'}",
        f"--web.listen-address=127.0.0.1:{port}",
        "--log.level=warn",
    ]
    with _process(args, f"http://127.0.0.1:{port}", "/-/ready", workdir / "prom.log") as server:
        yield server


def wait_for_scrape(prom: PrometheusClient, job: str, after: float, timeout_s: float = 30) -> float:
    """Wait until Prometheus has scraped ``job`` after the unix time ``after``; return that time.

    Events spread over scrapes (so that ``rate()`` sees each increase) wait for this instead of
    sleeping a scrape interval and hoping.
    """

    def scraped_at() -> float | None:
        result = prom.query(f'timestamp(up{{job="{job}"}})', time.time())
        at = result[0].points[-1][1] if result else None
        return at if at is not None and at > after else None

    value = wait_until(
        scraped_at, what=f"a scrape of {job!r} after {after:.1f}", timeout_s=timeout_s
    )
    return float(value)
