"""What a reverse proxy in front of an OpenAI server costs, against baselines measured in one run.

    .venv/bin/python -m benchmarks.proxy_overhead [--duration 3] [--rounds 3] [--quick]

Targets, all in front of the same fast upstream stub (benchmarks/upstream_stub.py):
- direct: wrk straight to the stub, the baseline every "added" latency is measured against;
- sidecar: ``python -m driftloop serve`` with capture on at sample rate 1.0;
- fleet-sidecar: ``python -m driftloop sidecar``, capture on, shards into a folder store;
- fleet-nocapture: the same at sample rate 0 (the request path's own cost, before capture);
- passthrough: benchmarks/passthrough_proxy.py (raw ASGI + aiohttp), the floor for a Python proxy;
- litellm: LiteLLM's proxy from .venv-bench (made by scripts/bench-venv.sh), the anchor.

Load comes from wrk (benchmarks/wrk_post.lua) at concurrency 1, 8 and 64, non-streaming and
streaming, in interleaved rounds so that drift in machine load spreads over every target; each
figure is the median over rounds. Proxy CPU per request is utime + stime of the proxy's process
tree (from /proc) over each run and the pause after it; CPU* is the proxy's own process alone,
without the capture row builder it starts (the interpreter the request path runs in). Results go to the terminal and to
benchmarks/results/proxy_overhead-<date>.json.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import functools
import importlib.metadata
import json
import math
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from benchmarks.report import write_results

ROOT = Path(__file__).resolve().parent.parent
LUA_SCRIPT = ROOT / "benchmarks" / "wrk_post.lua"
RESULTS_DIR = ROOT / "benchmarks" / "results"
BENCH_VENV = ROOT / ".venv-bench"
CHAT_PATH = "/v1/chat/completions"
MODEL = "bench-model"
LITELLM_KEY = "sk-bench-master-key"
SIDECAR_API_TOKEN = "bench-control-api-token"

TARGETS = ("direct", "sidecar", "fleet-sidecar", "fleet-nocapture", "passthrough", "litellm")
MODES = ("json", "stream")
CONCURRENCY = (1, 8, 64)
PASSTHROUGH_MARGIN = 0.10  # the sidecar should stay within 10% of the pass-through floor
LITELLM_FACTOR = 30.0  # and carry at least 30x LiteLLM's throughput
WRK_TIMEOUT = "30s"  # LiteLLM at c=64 takes seconds per request; wrk's 2 s default drops them
WARM_CONCURRENCY = 8
MAX_RUN_S = 15  # the longest a slow target's run is stretched to (see run_seconds)

console = Console(width=None if sys.stdout.isatty() else 120)


class BenchError(RuntimeError):
    """The benchmark cannot run at all (no wrk, no upstream stub)."""


class StartError(RuntimeError):
    """A target did not start or did not answer correctly; the message says why."""


@dataclass
class Target:
    """Something wrk can load: its chat URL, the processes whose CPU it costs, and its state."""

    name: str
    url: str = ""
    pids: tuple[int, ...] = ()
    api_key: str = ""
    status: str = "ok"  # ok | skipped | failed
    reason: str = ""
    version: str = ""
    probe: dict[str, Any] = field(default_factory=dict)
    requests_sent: int = 0


@dataclass
class Run:
    """One wrk run: one target, one mode, one concurrency, one round."""

    requests: int
    duration_s: float
    errors: dict[str, int]
    p50_ms: float | None  # None when no request completed within the run
    p90_ms: float | None
    p99_ms: float | None
    max_ms: float | None
    cpu_s: float | None  # proxy CPU over the run plus the settle time; None for direct
    process_cpu_s: float | None = None  # the proxy's own process alone (not the row builder)


@dataclass
class Cell:
    """All rounds of one target × mode × concurrency: medians over rounds resist one noisy run."""

    target: str
    mode: str
    concurrency: int
    runs: list[Run] = field(default_factory=list)

    @property
    def requests(self) -> int:
        return sum(r.requests for r in self.runs)

    @property
    def rps(self) -> float:
        return statistics.median(r.requests / r.duration_s for r in self.runs)

    @property
    def p50_ms(self) -> float | None:
        return _median([r.p50_ms for r in self.runs if r.p50_ms is not None])

    @property
    def p99_ms(self) -> float | None:
        return _median([r.p99_ms for r in self.runs if r.p99_ms is not None])

    @property
    def errors(self) -> int:
        return sum(sum(r.errors.values()) for r in self.runs)

    @property
    def cpu_ms_per_request(self) -> float | None:
        cpu = [r.cpu_s for r in self.runs if r.cpu_s is not None]
        if not cpu or not self.requests:
            return None
        return 1000 * sum(cpu) / self.requests


def _median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def _minus(a: float | None, b: float | None) -> float | None:
    return a - b if a is not None and b is not None else None


# --- processes -------------------------------------------------------------------------------


def cpu_layout(pin: bool) -> tuple[set[int] | None, set[int] | None, str]:
    """CPUs for (stub + wrk, each proxy) and a sentence saying so; None means unpinned."""
    cpus = sorted(os.sched_getaffinity(0))
    if not pin or len(cpus) < 2:
        why = "pinning off" if not pin else "only one CPU"
        return None, None, f"unpinned ({why}): stub, wrk and proxies share {len(cpus)} CPU(s)"
    load, proxy = set(cpus[:-1]), {cpus[-1]}
    return (
        load,
        proxy,
        f"stub + wrk pinned to CPU {_cpus(load)}, each proxy to CPU {_cpus(proxy)} "
        f"(the proxies and the stub share {len(cpus)} cores with wrk)",
    )


def _cpus(cpus: set[int]) -> str:
    return ",".join(str(c) for c in sorted(cpus))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Service:
    """A server subprocess in its own session, pinned, logging to a file, stopped by ``stop``."""

    def __init__(
        self, argv: list[str], log_path: Path, cpus: set[int] | None, env: dict[str, str]
    ) -> None:
        self.log_path = log_path
        with log_path.open("wb") as log:
            self.proc = subprocess.Popen(
                argv,
                cwd=ROOT,
                env={**os.environ, **env},
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=functools.partial(os.sched_setaffinity, 0, cpus) if cpus else None,
            )

    def tail(self, chars: int = 1500) -> str:
        return self.log_path.read_text(errors="replace")[-chars:].strip()

    def wait_ready(self, url: str, timeout_s: float) -> None:
        """Poll ``url`` until it answers 200; raise StartError with the log tail otherwise."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise StartError(f"exited with {self.proc.returncode}: {self.tail()}")
            with contextlib.suppress(OSError), urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
            time.sleep(0.2)
        raise StartError(f"not ready at {url} after {timeout_s:.0f} s: {self.tail()}")

    def stop(self) -> None:
        """SIGTERM the process group, SIGKILL it if it lingers."""
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=5)


def _children(pid: int) -> list[int]:
    kids: list[int] = []
    with contextlib.suppress(OSError):
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/children") as handle:
                kids.extend(int(k) for k in handle.read().split())
    return kids


def tree_cpu_s(pids: tuple[int, ...], descendants: bool = True) -> float:
    """utime + stime, in seconds, of ``pids`` and (unless told not to) all their descendants."""
    ticks = 0
    todo = list(pids)
    while todo:
        pid = todo.pop()
        with contextlib.suppress(OSError):
            with open(f"/proc/{pid}/stat") as handle:
                fields = handle.read().rsplit(")", 1)[1].split()
            ticks += int(fields[11]) + int(fields[12])  # stat fields 14 and 15
            if descendants:
                todo.extend(_children(pid))
    return ticks / os.sysconf("SC_CLK_TCK")


# --- targets ---------------------------------------------------------------------------------


def request_body(stream: bool) -> bytes:
    """The chat request every target gets (the OpenAI SDK's shape; no stream_options)."""
    body: dict[str, Any] = {
        "model": MODEL,
        "messages": [
            {"role": "system", "content": "You are a concise support assistant."},
            {"role": "user", "content": "How do I reset my password if the recovery email fails?"},
        ],
        "max_tokens": 64,
        "temperature": 0,
    }
    if stream:
        body["stream"] = True
    return json.dumps(body).encode()


def start_stub(stack: contextlib.ExitStack, tmp: Path, cpus: set[int] | None) -> Target:
    port = free_port()
    argv = [sys.executable, "-m", "benchmarks.upstream_stub", "--port", str(port)]
    service = Service(argv, tmp / "stub.log", cpus, {})
    stack.callback(service.stop)
    try:
        service.wait_ready(f"http://127.0.0.1:{port}/health", 20)
    except StartError as exc:
        raise BenchError(f"the upstream stub did not start: {exc}") from None
    return Target("direct", url=f"http://127.0.0.1:{port}{CHAT_PATH}", version=_version("direct"))


def launch_passthrough(tmp: Path, upstream: str, cpus: set[int] | None) -> tuple[Service, str]:
    port = free_port()
    argv = [sys.executable, "-m", "benchmarks.passthrough_proxy", "--port", str(port)]
    argv += ["--upstream", upstream]
    service = Service(argv, tmp / "passthrough.log", cpus, {})
    return service, f"http://127.0.0.1:{port}"


def launch_sidecar(tmp: Path, upstream: str, cpus: set[int] | None) -> tuple[Service, str]:
    port, api_port = free_port(), free_port()
    config = tmp / "driftloop.toml"
    config.write_text(
        f'cache_dir = "{tmp / "cache"}"\n'
        f'[sidecar]\nhost = "127.0.0.1"\nport = {port}\nupstream_url = "{upstream}"\n'
        f'[capture]\ndb_path = "{tmp / "driftloop.duckdb"}"\nsample_rate = 1.0\n'
        f"[vllm]\nlaunch = false\n"
        f'[api]\nhost = "127.0.0.1"\nport = {api_port}\n'
    )
    argv = [sys.executable, "-m", "driftloop", "serve", "--config", str(config)]
    env = {"DRIFTLOOP_API_TOKEN": SIDECAR_API_TOKEN}
    return Service(argv, tmp / "sidecar.log", cpus, env), f"http://127.0.0.1:{port}"


def launch_litellm(tmp: Path, upstream: str, cpus: set[int] | None) -> tuple[Service, str]:
    litellm = BENCH_VENV / "bin" / "litellm"
    if not litellm.exists():
        raise FileNotFoundError(f"{litellm} is missing: run scripts/bench-venv.sh")
    port = free_port()
    config = tmp / "litellm.yaml"
    config.write_text(
        "model_list:\n"
        f"  - model_name: {MODEL}\n"
        "    litellm_params:\n"
        f"      model: openai/{MODEL}\n"
        f"      api_base: {upstream}/v1\n"
        "      api_key: sk-stub\n"
        "general_settings:\n"
        f"  master_key: {LITELLM_KEY}\n"
    )
    argv = [str(litellm), "--config", str(config), "--host", "127.0.0.1", "--port", str(port)]
    argv += ["--num_workers", "1"]
    env = {"LITELLM_LOCAL_MODEL_COST_MAP": "True", "LITELLM_LOG": "ERROR"}
    return Service(argv, tmp / "litellm.log", cpus, env), f"http://127.0.0.1:{port}"


def launch_fleet_sidecar(
    tmp: Path, upstream: str, cpus: set[int] | None, sample_rate: float = 1.0
) -> tuple[Service, str]:
    """``driftloop sidecar``: capture into shards in a folder store; no controller answers."""
    port = free_port()
    name = "fleet-sidecar" if sample_rate else "fleet-nocapture"
    tmp = tmp / name
    tmp.mkdir()
    config = tmp / "fleet-sidecar.toml"
    config.write_text(
        f'[sidecar]\nhost = "127.0.0.1"\nport = {port}\nupstream_url = "{upstream}"\n'
        f"[capture]\nsample_rate = {sample_rate}\n[vllm]\nlaunch = false\n"
        f'[fleet]\nsidecar_id = "bench"\nobject_store_url = "{tmp / "objects"}"\n'
        f'spool_dir = "{tmp / "spool"}"\ncontroller_url = "http://127.0.0.1:9"\n'
        "adapter_agent = false\n"  # the stub upstream loads no adapters
    )
    argv = [sys.executable, "-m", "driftloop", "sidecar", "--config", str(config)]
    env = {"DRIFTLOOP_FLEET_TOKEN": SIDECAR_API_TOKEN}
    return Service(argv, tmp / f"{name}.log", cpus, env), f"http://127.0.0.1:{port}"


READY_PATHS = {
    "sidecar": "/healthz",
    "fleet-sidecar": "/healthz",
    "fleet-nocapture": "/healthz",
    "passthrough": "/v1/models",
    "litellm": "/health/liveliness",
}
START_TIMEOUT_S = {
    "sidecar": 60.0,
    "fleet-sidecar": 60.0,
    "fleet-nocapture": 60.0,
    "passthrough": 20.0,
    "litellm": 180.0,
}
LAUNCHERS = {
    "sidecar": launch_sidecar,
    "fleet-sidecar": launch_fleet_sidecar,
    # The same sidecar capturing nothing: what the request path costs before any capture.
    "fleet-nocapture": functools.partial(launch_fleet_sidecar, sample_rate=0.0),
    "passthrough": launch_passthrough,
    "litellm": launch_litellm,
}


def _output(argv: list[str]) -> str:
    try:
        out = subprocess.run(argv, capture_output=True, text=True, check=False).stdout.strip()
    except OSError:
        out = ""
    return out or "unknown"


def _version(name: str) -> str:
    """What exactly was measured, for the results file."""
    if name == "litellm":
        code = "import importlib.metadata as m; print(m.version('litellm'))"
        return "litellm " + _output([str(BENCH_VENV / "bin" / "python"), "-c", code])
    if name in ("sidecar", "fleet-sidecar", "fleet-nocapture"):
        return "driftloop " + _output(["git", "-C", str(ROOT), "describe", "--always", "--dirty"])
    if name == "passthrough":
        return "aiohttp " + importlib.metadata.version("aiohttp")
    return "stub uvicorn " + importlib.metadata.version("uvicorn")


def start_proxies(
    stack: contextlib.ExitStack, names: list[str], tmp: Path, upstream: str, cpus: set[int] | None
) -> list[Target]:
    """Launch every proxy at once, then wait for each; a proxy that fails is kept, marked."""
    targets: list[Target] = []
    waiting: list[tuple[Target, Service, str]] = []
    for name in names:
        target = Target(name, version=_version(name))
        targets.append(target)
        try:
            service, base = LAUNCHERS[name](tmp, upstream, cpus)
        except FileNotFoundError as exc:
            target.status, target.reason = "skipped", str(exc)
            continue
        stack.callback(service.stop)
        waiting.append((target, service, base))
    for target, service, base in waiting:
        try:
            service.wait_ready(base + READY_PATHS[target.name], START_TIMEOUT_S[target.name])
        except StartError as exc:
            target.status = "skipped" if target.name == "litellm" else "failed"
            target.reason = f"did not start: {exc}"
            continue
        target.url, target.pids = base + CHAT_PATH, (service.proc.pid,)
        target.api_key = LITELLM_KEY if target.name == "litellm" else ""
    return targets


def post(target: Target, body: bytes) -> bytes:
    """One request through ``target``; raises StartError on anything but a 200."""
    headers = {"Content-Type": "application/json"}
    if target.api_key:
        headers["Authorization"] = f"Bearer {target.api_key}"
    request = urllib.request.Request(target.url, data=body, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.read()
    except urllib.error.HTTPError as exc:
        raise StartError(f"answered {exc.code}: {exc.read()[:500]!r}") from None
    except OSError as exc:
        raise StartError(f"request failed: {exc}") from None


def probe(target: Target, direct: dict[str, bytes]) -> dict[str, bytes]:
    """Check one answer of each mode and record how it compares with the stub's own bytes."""
    answer = {mode: post(target, request_body(mode == "stream")) for mode in MODES}
    try:
        content = json.loads(answer["json"])["choices"][0]["message"]["content"]
    except (ValueError, KeyError, IndexError, TypeError) as exc:
        raise StartError(f"bad chat.completion: {exc!r}: {answer['json'][:300]!r}") from None
    events = [e for e in answer["stream"].replace(b"\r\n", b"\n").split(b"\n\n") if e.strip()]
    if not content or not events or events[-1].strip() != b"data: [DONE]":
        raise StartError(f"bad stream (no [DONE] at the end): {answer['stream'][-300:]!r}")
    target.probe = {
        "stream_events_before_done": len(events) - 1,
        "usage_in_stream": any(b'"usage"' in e for e in events),
        "json_bytes": len(answer["json"]),
        "stream_bytes": len(answer["stream"]),
    }
    if direct:
        target.probe["identical_to_direct"] = {m: answer[m] == direct[m] for m in MODES}
    return answer


# --- load ------------------------------------------------------------------------------------


def check_wrk() -> str:
    wrk = shutil.which("wrk")
    if wrk is None:
        raise BenchError("wrk is not installed: apt-get install -y wrk")
    return wrk


def run_wrk(
    wrk: str,
    target: Target,
    body_file: Path,
    concurrency: int,
    duration_s: int,
    cpus: set[int] | None,
) -> dict[str, Any]:
    """One wrk run; returns the summary the Lua ``done`` hook printed."""
    argv = [wrk, "-t1", f"-c{concurrency}", f"-d{duration_s}s", "--timeout", WRK_TIMEOUT]
    argv += ["-s", str(LUA_SCRIPT), target.url, "--", str(body_file), target.api_key]
    out = subprocess.run(
        argv,
        capture_output=True,
        text=True,
        timeout=duration_s + 60,
        check=False,
        preexec_fn=functools.partial(os.sched_setaffinity, 0, cpus) if cpus else None,
    )
    for line in out.stdout.splitlines():
        if line.startswith("WRK_JSON "):
            summary: dict[str, Any] = json.loads(line.removeprefix("WRK_JSON "))
            target.requests_sent += summary["requests"]
            return summary
    raise BenchError(f"wrk printed no summary (exit {out.returncode}): {out.stderr[-500:]}")


def measure(
    wrk: str,
    target: Target,
    body_file: Path,
    concurrency: int,
    duration_s: int,
    settle_s: float,
    cpus: set[int] | None,
) -> Run:
    """One recorded run; proxy CPU counts until ``settle_s`` after wrk stops (deferred work)."""
    before = tree_cpu_s(target.pids) if target.pids else None
    own_before = _own_process_cpu_s(target)
    summary = run_wrk(wrk, target, body_file, concurrency, duration_s, cpus)
    time.sleep(settle_s)
    cpu = tree_cpu_s(target.pids) - before if before is not None else None
    own = _own_process_cpu_s(target)
    own_cpu = own - own_before if own is not None and own_before is not None else None
    done = summary["requests"] > 0
    lat = {k: v / 1000 if done else None for k, v in summary["latency_us"].items()}
    return Run(
        requests=summary["requests"],
        duration_s=summary["duration_us"] / 1e6,
        errors=summary["errors"],
        p50_ms=lat["p50"],
        p90_ms=lat["p90"],
        p99_ms=lat["p99"],
        max_ms=lat["max"],
        cpu_s=cpu,
        process_cpu_s=own_cpu,
    )


def _own_process_cpu_s(target: Target) -> float | None:
    """The proxy's own process, without its children (the row builder)."""
    return tree_cpu_s(target.pids, descendants=False) if target.pids else None


def run_seconds(base_s: int, warm_p50_ms: float, concurrency: int) -> int:
    """``base_s``, stretched to 4× the latency expected at ``concurrency``, within 3× ``base_s``.

    wrk counts only requests that finish within the run, so a target that needs seconds per
    request (LiteLLM at c=64) would otherwise be measured mostly while its first wave is in flight.
    The expectation scales the c=8 warm-up latency linearly, as for a saturated server.
    """
    expected_s = warm_p50_ms / 1000 * concurrency / WARM_CONCURRENCY
    return max(base_s, min(MAX_RUN_S, 3 * base_s, math.ceil(4 * expected_s)))


def schedule(targets: list[Target], rounds: int) -> Iterator[tuple[int, int, str, Target]]:
    """Interleaved order: per round, per concurrency, per mode, every target (rotated per round)."""
    for r in range(rounds):
        order = targets[r % len(targets) :] + targets[: r % len(targets)]
        for concurrency in CONCURRENCY:
            for mode in MODES:
                for target in order:
                    yield r, concurrency, mode, target


# --- report ----------------------------------------------------------------------------------


def _ms(value: float | None, signed: bool = False) -> str:
    if value is None:
        return "—"
    return f"{value:+.2f}" if signed else f"{value:.2f}"


def summarize(cells: dict[tuple[str, str, int], Cell]) -> list[dict[str, Any]]:
    """One row per cell, with added latency against direct at the same mode and concurrency."""
    rows = []
    for (name, mode, c), cell in cells.items():
        base = cells.get(("direct", mode, c)) if name != "direct" else None
        rows.append(
            {
                "target": name,
                "mode": mode,
                "concurrency": c,
                "requests": cell.requests,
                "rps": cell.rps,
                "p50_ms": cell.p50_ms,
                "p99_ms": cell.p99_ms,
                "added_p50_ms": _minus(cell.p50_ms, base.p50_ms) if base else None,
                "added_p99_ms": _minus(cell.p99_ms, base.p99_ms) if base else None,
                "proxy_cpu_ms_per_request": cell.cpu_ms_per_request,
                "errors": cell.errors,
                "runs": [asdict(r) for r in cell.runs],
            }
        )
    return rows


def _rps(run: dict[str, Any]) -> float:
    return float(run["requests"] / run["duration_s"])


def _cpu_per_request(run: dict[str, Any], key: str = "cpu_s") -> float | None:
    cpu = run.get(key)
    return cpu / run["requests"] if cpu is not None and run["requests"] else None


def paired(a: dict[str, Any], b: dict[str, Any], metric: str) -> float | None:
    """Median over rounds of a/b, pairing the runs of one round (taken seconds apart).

    On a shared machine the load drifts between rounds; a ratio within a round cancels most of it.
    """
    values = []
    x: float | None
    y: float | None
    for run_a, run_b in zip(a["runs"], b["runs"], strict=True):
        if metric == "rps":
            x, y = _rps(run_a), _rps(run_b)
        elif metric == "cpu_per_request":
            x, y = _cpu_per_request(run_a), _cpu_per_request(run_b)
        elif metric == "process_cpu_per_request":
            x = _cpu_per_request(run_a, "process_cpu_s")
            y = _cpu_per_request(run_b, "process_cpu_s")
        else:
            x, y = run_a[metric], run_b[metric]
        if x is not None and y:
            values.append(x / y)
    return _median(values)


def ratios(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Sidecar against the pass-through floor and against LiteLLM, per mode and concurrency."""
    by_key = {(r["target"], r["mode"], r["concurrency"]): r for r in rows}
    out = []
    for mode in MODES:
        for c in CONCURRENCY:
            side = by_key.get(("sidecar", mode, c))
            floor = by_key.get(("passthrough", mode, c))
            anchor = by_key.get(("litellm", mode, c))
            entry: dict[str, Any] = {"mode": mode, "concurrency": c}
            if side and floor:
                rps = entry["sidecar_vs_passthrough_rps"] = paired(side, floor, "rps")
                p50 = entry["sidecar_vs_passthrough_p50"] = paired(side, floor, "p50_ms")
                entry["sidecar_vs_passthrough_p99"] = paired(side, floor, "p99_ms")
                entry["sidecar_vs_passthrough_cpu"] = paired(side, floor, "cpu_per_request")
                entry["sidecar_vs_passthrough_process_cpu"] = paired(
                    side, floor, "process_cpu_per_request"
                )
                if rps is not None and p50 is not None:
                    entry["within_10pct"] = (
                        rps >= 1 - PASSTHROUGH_MARGIN and p50 <= 1 + PASSTHROUGH_MARGIN
                    )
            if anchor and side:
                vs_litellm = entry["sidecar_vs_litellm_rps"] = paired(side, anchor, "rps")
                if vs_litellm is not None:
                    entry["at_least_30x"] = vs_litellm >= LITELLM_FACTOR
            fleet = by_key.get(("fleet-sidecar", mode, c))
            if fleet and floor:
                entry["fleet_sidecar_vs_passthrough_rps"] = paired(fleet, floor, "rps")
                entry["fleet_sidecar_vs_passthrough_p99"] = paired(fleet, floor, "p99_ms")
                entry["fleet_sidecar_vs_passthrough_cpu"] = paired(fleet, floor, "cpu_per_request")
                entry["fleet_sidecar_vs_passthrough_process_cpu"] = paired(
                    fleet, floor, "process_cpu_per_request"
                )
            bare = by_key.get(("fleet-nocapture", mode, c))
            if bare and floor:
                entry["fleet_nocapture_vs_passthrough_rps"] = paired(bare, floor, "rps")
                entry["fleet_nocapture_vs_passthrough_cpu"] = paired(bare, floor, "cpu_per_request")
            if anchor and floor:
                entry["passthrough_vs_litellm_rps"] = paired(floor, anchor, "rps")
            out.append(entry)
    return out


def print_report(
    rows: list[dict[str, Any]], ratio_rows: list[dict[str, Any]], targets: list[Target]
) -> None:
    table = Table(title="Proxy overhead (latencies in ms; added = target − direct)")
    for column in ("mode", "c", "target", "req/s", "p50", "p99", "+p50", "+p99"):
        table.add_column(column, justify="left" if column in ("mode", "target") else "right")
    table.add_column("proxy CPU ms/req", justify="right")
    table.add_column("errors", justify="right")
    previous = None
    for row in sorted(rows, key=_row_order):
        if previous and previous != (row["mode"], row["concurrency"]):
            table.add_section()
        previous = (row["mode"], row["concurrency"])
        table.add_row(
            row["mode"],
            str(row["concurrency"]),
            row["target"],
            f"{row['rps']:,.0f}",
            _ms(row["p50_ms"]),
            _ms(row["p99_ms"]),
            _ms(row["added_p50_ms"], signed=True),
            _ms(row["added_p99_ms"], signed=True),
            _ms(row["proxy_cpu_ms_per_request"]),
            str(row["errors"]),
        )
    console.print(table)

    ratio_table = Table(
        title="Ratios, median of per-round pairs (sidecar ≈ passthrough within 10%; "
        "sidecar ≥ 30× LiteLLM)"
    )
    for column in ("mode", "c", "rps side/pass", "p50 side/pass", "p99 side/pass", "within 10%"):
        ratio_table.add_column(column, justify="right")
    for column in ("rps side/LiteLLM", "≥ 30×", "rps pass/LiteLLM"):
        ratio_table.add_column(column, justify="right")
    for column in ("CPU side/pass", "CPU* side/pass"):
        ratio_table.add_column(column, justify="right")
    for column in ("rps fleet/pass", "p99 fleet/pass", "CPU fleet/pass", "CPU* fleet/pass"):
        ratio_table.add_column(column, justify="right")
    for column in ("rps nocap/pass", "CPU nocap/pass"):
        ratio_table.add_column(column, justify="right")
    for r in ratio_rows:
        ratio_table.add_row(
            r["mode"],
            str(r["concurrency"]),
            _ratio(r.get("sidecar_vs_passthrough_rps")),
            _ratio(r.get("sidecar_vs_passthrough_p50")),
            _ratio(r.get("sidecar_vs_passthrough_p99")),
            _verdict(r.get("within_10pct")),
            _ratio(r.get("sidecar_vs_litellm_rps")),
            _verdict(r.get("at_least_30x")),
            _ratio(r.get("passthrough_vs_litellm_rps")),
            _ratio(r.get("sidecar_vs_passthrough_cpu")),
            _ratio(r.get("sidecar_vs_passthrough_process_cpu")),
            _ratio(r.get("fleet_sidecar_vs_passthrough_rps")),
            _ratio(r.get("fleet_sidecar_vs_passthrough_p99")),
            _ratio(r.get("fleet_sidecar_vs_passthrough_cpu")),
            _ratio(r.get("fleet_sidecar_vs_passthrough_process_cpu")),
            _ratio(r.get("fleet_nocapture_vs_passthrough_rps")),
            _ratio(r.get("fleet_nocapture_vs_passthrough_cpu")),
        )
    console.print(ratio_table)
    console.print(
        "CPU: the proxy's whole process tree per request (with the row builder child); "
        "CPU*: the proxy's own process alone (the request path's interpreter); "
        "nocap: the fleet sidecar at sample rate 0."
    )
    for target in targets:
        if target.status != "ok":
            console.print(f"[bold]{target.name}[/bold] {target.status}: {target.reason}")


def _row_order(row: dict[str, Any]) -> tuple[int, int, int]:
    return MODES.index(row["mode"]), row["concurrency"], TARGETS.index(row["target"])


def _ratio(value: float | None) -> str:
    if value is None:
        return "—"
    return f"{value:.1f}×" if value >= 10 else f"{value:.2f}"


def _verdict(value: bool | None) -> str:
    if value is None:
        return "—"
    return "[green]yes[/green]" if value else "[red]no[/red]"


def sidecar_metrics(target: Target) -> dict[str, float]:
    """The sidecar's capture and proxy counters, to show that capture really ran."""
    url = target.url.removesuffix(CHAT_PATH) + "/metrics"
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            text = response.read().decode()
    except OSError as exc:
        console.print(f"[yellow]{url} unreadable: {exc}[/]")
        return {}
    wanted = ("driftloop_capture_", "driftloop_proxy_requests_total", "driftloop_proxy_client")
    metrics: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith(wanted) and "_bucket" not in line and "_created" not in line:
            name, _, value = line.rpartition(" ")
            metrics[name] = float(value)
    return metrics


# --- main ------------------------------------------------------------------------------------


def start_targets(
    stack: contextlib.ExitStack,
    tmp: Path,
    names: set[str],
    load: set[int] | None,
    proxy: set[int] | None,
) -> list[Target]:
    """The stub (as the direct target), then the proxies, each checked with one request per mode."""
    direct = start_stub(stack, tmp, load)
    upstream = direct.url.removesuffix(CHAT_PATH)
    proxies = [n for n in TARGETS if n in names and n != "direct"]
    targets = [direct, *start_proxies(stack, proxies, tmp, upstream, proxy)]
    direct_answers = probe(direct, {})
    for target in targets[1:]:
        if target.status == "ok":
            try:
                probe(target, direct_answers)
            except StartError as exc:
                target.status, target.reason = "failed", f"probe: {exc}"
    for t in targets:
        state = "ok" if t.status == "ok" else f"{t.status}: {t.reason[:300]}"
        console.print(f"[dim]{t.name} ({t.version}): {state}[/dim]")
    return targets


def run_rounds(
    wrk: str,
    live: list[Target],
    bodies: dict[str, Path],
    args: argparse.Namespace,
    cpus: set[int] | None,
) -> dict[tuple[str, str, int], Cell]:
    """A warm-up per target and mode (unrecorded but for its latency), then the interleaved runs."""
    warm_p50_ms = {}
    for target in live:
        for mode in MODES:
            summary = run_wrk(wrk, target, bodies[mode], WARM_CONCURRENCY, 1, cpus)
            warm_p50_ms[(target.name, mode)] = summary["latency_us"]["p50"] / 1000
    cells = {
        (t.name, mode, c): Cell(t.name, mode, c)
        for t in live
        for c in CONCURRENCY
        for mode in MODES
    }
    total = args.rounds * len(cells)
    for i, (r, c, mode, target) in enumerate(schedule(live, args.rounds), 1):
        seconds = run_seconds(args.duration, warm_p50_ms[(target.name, mode)], c)
        run = measure(wrk, target, bodies[mode], c, seconds, args.settle, cpus)
        cells[(target.name, mode, c)].runs.append(run)
        console.print(
            f"[dim]{i:3}/{total} round {r + 1} c={c:<2} {mode:6} {target.name:11} "
            f"{seconds:2} s {run.requests / run.duration_s:9,.0f} req/s  "
            f"p50 {_ms(run.p50_ms):>8} ms  errors {sum(run.errors.values())}[/dim]"
        )
    return cells


def benchmark(args: argparse.Namespace) -> dict[str, Any]:
    """Start everything, run the interleaved rounds, stop everything; returns the results."""
    wrk = check_wrk()
    load_cpus, proxy_cpus, pinning = cpu_layout(not args.no_pin)
    console.print(f"[dim]{pinning}[/dim]")
    load_at_start = os.getloadavg()
    if load_at_start[0] > 0.5:
        console.print(
            f"[yellow]the machine is busy (load {load_at_start[0]:.2f}): noisy numbers[/]"
        )
    started = time.monotonic()
    with contextlib.ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="proxy-overhead-")))
        targets = start_targets(stack, tmp, args.targets, load_cpus, proxy_cpus)
        live = [t for t in targets if t.status == "ok"]
        bodies = {mode: tmp / f"body-{mode}.json" for mode in MODES}
        for mode, path in bodies.items():
            path.write_bytes(request_body(mode == "stream"))
        cells = run_rounds(wrk, live, bodies, args, load_cpus)
        capture = {t.name: sidecar_metrics(t) for t in live if t.name == "sidecar"}

    rows = summarize(cells)
    ratio_rows = ratios(rows)
    print_report(rows, ratio_rows, targets)
    for name, metrics in capture.items():
        written = metrics.get("driftloop_capture_rows_written_total", 0)
        dropped = sum(v for k, v in metrics.items() if k.startswith("driftloop_capture_dropped"))
        sent = next(t.requests_sent for t in targets if t.name == name) + len(MODES)
        console.print(
            f"{name} capture: {written:,.0f} rows written, {dropped:,.0f} dropped; {sent:,} "
            "requests completed through it (plus those wrk cut off at the end of each run)"
        )
    console.print(f"[dim]{pinning}[/dim]")
    return {
        "benchmark": "proxy_overhead",
        "date": dt.datetime.now().isoformat(timespec="seconds"),
        "elapsed_s": round(time.monotonic() - started, 1),
        "settings": {
            "duration_s": args.duration,
            "rounds": args.rounds,
            "settle_s": args.settle,
            "concurrency": list(CONCURRENCY),
            "modes": list(MODES),
            "wrk_threads": 1,
            "wrk_timeout": WRK_TIMEOUT,
        },
        "machine": {
            "cpus": len(os.sched_getaffinity(0)),
            "pinning": pinning,
            "loadavg_at_start": load_at_start,
            "loadavg_at_end": os.getloadavg(),
        },
        "targets": {
            t.name: {
                "status": t.status,
                "reason": t.reason,
                "version": t.version,
                "probe": t.probe,
                "requests_sent": t.requests_sent,
            }
            for t in targets
        },
        "sidecar_metrics": capture.get("sidecar", {}),
        "results": rows,
        "ratios": ratio_rows,
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=int, default=3, help="seconds per wrk run")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (medians)")
    parser.add_argument(
        "--settle", type=float, default=1.0, help="pause after each run, counted in proxy CPU"
    )
    parser.add_argument("--quick", action="store_true", help="1 s runs, one round (< 1 minute)")
    parser.add_argument(
        "--targets",
        default=",".join(TARGETS),
        help=f"comma-separated subset of {','.join(TARGETS)} (direct always runs)",
    )
    parser.add_argument("--no-pin", action="store_true", help="do not pin processes to CPUs")
    args = parser.parse_args(argv)
    if args.quick:
        args.duration, args.rounds, args.settle = 1, 1, 0.3
    args.targets = {t.strip() for t in args.targets.split(",") if t.strip()} | {"direct"}
    unknown = args.targets - set(TARGETS)
    if unknown:
        parser.error(f"unknown targets: {', '.join(sorted(unknown))}")
    if args.duration < 1 or args.rounds < 1:
        parser.error("--duration and --rounds must be at least 1")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    try:
        payload = benchmark(args)
    except BenchError as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise SystemExit(2) from None
    console.print(
        f"results written to {write_results('proxy_overhead', payload, RESULTS_DIR).relative_to(ROOT)}"
    )


if __name__ == "__main__":
    main()
