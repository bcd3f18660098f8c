"""Does a flood of unauthenticated control-API calls move the proxy's latency? One run, two phases.

    .venv/bin/python -m benchmarks.api_flood [--rate 100] [--flood-rate 200] [--seconds 10]

``python -m driftloop serve`` (the real sidecar and the real control API, as the service runs
them; capture on at sample rate 1.0) sits in front of the upstream stub. A client sends chat
completions through the sidecar at a fixed rate (open loop: latency counts from the scheduled
send time, so a stall is not hidden by the client waiting) in alternating phases: idle, then
while another process floods the control API with calls that carry a wrong token. Each phase
runs ``--rounds`` times, interleaved; figures are medians over rounds. Target: flood / idle
<= 1.10 for p50 and p99. Results go to benchmarks/results/api_flood-<date>.json.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import aiohttp

from benchmarks.proxy_overhead import (
    CHAT_PATH,
    ROOT,
    BenchError,
    Service,
    StartError,
    free_port,
    request_body,
    start_stub,
)
from benchmarks.report import write_results

RESULTS_DIR = ROOT / "benchmarks" / "results"
API_TOKEN = "bench-control-api-token-0123456789"
TARGET_RATIO = 1.10
FLOOD_PATHS = ("/api/v1/status", "/api/v1/requests", "/api/v1/audit", "/api/v1/retrain/runs")


async def open_loop(url: str, body: bytes, rate: float, seconds: float) -> dict[str, Any]:
    """POST ``body`` at ``rate``/s for ``seconds``; latencies (ms) from each scheduled send."""
    latencies: list[float] = []
    errors = 0
    count = int(rate * seconds)
    headers = {"Content-Type": "application/json"}
    connector = aiohttp.TCPConnector(limit=64)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def one(due: float) -> None:
            nonlocal errors
            await asyncio.sleep(max(0.0, due - time.perf_counter()))
            try:
                async with session.post(url, data=body, headers=headers) as response:
                    await response.read()
                    ok = response.status == 200
            except aiohttp.ClientError:
                ok = False
            if ok:
                latencies.append((time.perf_counter() - due) * 1000)
            else:
                errors += 1

        start = time.perf_counter() + 0.05
        await asyncio.gather(*(one(start + i / rate) for i in range(count)))
    ordered = sorted(latencies)
    return {
        "requests": count,
        "errors": errors,
        "p50_ms": _percentile(ordered, 0.50),
        "p99_ms": _percentile(ordered, 0.99),
    }


async def flood(base_url: str, rate: float, seconds: float) -> dict[str, Any]:
    """Calls with a wrong token at ``rate``/s, cycling through routes; counts the statuses."""
    statuses: dict[str, int] = {}
    headers = {"Authorization": "Bearer not-the-token"}
    async with aiohttp.ClientSession() as session:

        async def one(i: int, due: float) -> None:
            await asyncio.sleep(max(0.0, due - time.perf_counter()))
            try:
                async with session.get(
                    base_url + FLOOD_PATHS[i % len(FLOOD_PATHS)], headers=headers
                ) as r:
                    await r.read()
                    key = str(r.status)
            except aiohttp.ClientError as exc:
                key = type(exc).__name__
            statuses[key] = statuses.get(key, 0) + 1

        start = time.perf_counter()
        await asyncio.gather(*(one(i, start + i / rate) for i in range(int(rate * seconds))))
    return {"calls": int(rate * seconds), "seconds": seconds, "statuses": statuses}


def _percentile(ordered: list[float], q: float) -> float | None:
    if not ordered:
        return None
    return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 3)


def launch_service(tmp: Path, upstream: str) -> tuple[Service, str, str]:
    port, api_port = free_port(), free_port()
    config = tmp / "driftloop.toml"
    config.write_text(
        f'cache_dir = "{tmp / "cache"}"\n'
        f'[sidecar]\nhost = "127.0.0.1"\nport = {port}\nupstream_url = "{upstream}"\n'
        f'[capture]\ndb_path = "{tmp / "driftloop.duckdb"}"\nsample_rate = 1.0\n'
        "[vllm]\nlaunch = false\n[drift]\nenabled = false\n[judges]\nenabled = false\n"
        f'[api]\nhost = "127.0.0.1"\nport = {api_port}\n'
    )
    argv = [sys.executable, "-m", "driftloop", "serve", "--config", str(config)]
    service = Service(argv, tmp / "service.log", None, {"DRIFTLOOP_API_TOKEN": API_TOKEN})
    return service, f"http://127.0.0.1:{port}", f"http://127.0.0.1:{api_port}"


def start_flood(api_url: str, rate: float, seconds: float, out: Path) -> subprocess.Popen[bytes]:
    """The flood runs in its own process, so it never shares the measuring client's loop."""
    argv = [sys.executable, "-m", "benchmarks.api_flood", "--flood-only", api_url]
    argv += ["--flood-rate", str(rate), "--seconds", str(seconds), "--flood-out", str(out)]
    return subprocess.Popen(argv, cwd=ROOT, stdin=subprocess.DEVNULL)


def audit_summary(api_url: str) -> dict[str, Any]:
    """How the audit log holds the flood: rows by status, and calls folded into counted rows."""
    request = urllib.request.Request(
        api_url + "/api/v1/audit?limit=1000", headers={"Authorization": f"Bearer {API_TOKEN}"}
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        rows = json.loads(response.read())
    by_status: dict[str, int] = {}
    folded = 0
    for row in rows:
        by_status[str(row["status_code"])] = by_status.get(str(row["status_code"]), 0) + 1
        if row["detail"] and row["status_code"] == 429:
            folded += json.loads(row["detail"]).get("aggregated", 0)
    return {"rows_by_status": by_status, "calls_folded_into_429_rows": folded}


def benchmark(args: argparse.Namespace) -> dict[str, Any]:
    phases: dict[str, list[dict[str, Any]]] = {"idle": [], "flood": []}
    floods: list[dict[str, Any]] = []
    with contextlib.ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="api-flood-")))
        stub = start_stub(stack, tmp, None)
        upstream = stub.url.removesuffix(CHAT_PATH)
        service, sidecar_url, api_url = launch_service(tmp, upstream)
        stack.callback(service.stop)
        try:
            service.wait_ready(sidecar_url + "/healthz", 60)
        except StartError as exc:
            raise BenchError(f"driftloop serve did not start: {exc}") from None
        body, url = request_body(False), sidecar_url + CHAT_PATH
        asyncio.run(open_loop(url, body, args.rate, 2))  # warm-up: connections, JIT-less caches
        for round_no in range(args.rounds):
            phases["idle"].append(asyncio.run(open_loop(url, body, args.rate, args.seconds)))
            out = tmp / f"flood-{round_no}.json"
            # the flood starts first and outlasts the measurement on both ends
            proc = start_flood(api_url, args.flood_rate, args.seconds + 2, out)
            time.sleep(1)
            phases["flood"].append(asyncio.run(open_loop(url, body, args.rate, args.seconds)))
            proc.wait(timeout=args.seconds + 60)
            floods.append(json.loads(out.read_text()))
        audit = audit_summary(api_url)
    summary = {name: _medians(runs) for name, runs in phases.items()}
    ratios = {
        key: round(summary["flood"][key] / summary["idle"][key], 3)
        for key in ("p50_ms", "p99_ms")
        if summary["idle"][key] and summary["flood"][key]
    }
    return {
        "setup": vars(args) | {"target_ratio": TARGET_RATIO},
        "summary": summary,
        "ratio_flood_over_idle": ratios,
        "within_target": all(r <= TARGET_RATIO for r in ratios.values()),
        "rounds": phases,
        "floods": floods,
        "audit": audit,
    }


def _medians(runs: list[dict[str, Any]]) -> dict[str, Any]:
    def median(key: str) -> float | None:
        values = [r[key] for r in runs if r[key] is not None]
        return round(statistics.median(values), 3) if values else None

    return {
        "p50_ms": median("p50_ms"),
        "p99_ms": median("p99_ms"),
        "errors": sum(r["errors"] for r in runs),
        "requests": sum(r["requests"] for r in runs),
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=100.0, help="proxied requests per second")
    parser.add_argument("--flood-rate", type=float, default=200.0, help="API calls per second")
    parser.add_argument("--seconds", type=float, default=8.0, help="length of each phase")
    parser.add_argument("--rounds", type=int, default=4, help="idle/flood pairs (medians)")
    parser.add_argument("--flood-only", metavar="API_URL", help=argparse.SUPPRESS)
    parser.add_argument("--flood-out", type=Path, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.flood_only:
        result = asyncio.run(flood(args.flood_only, args.flood_rate, args.seconds))
        args.flood_out.write_text(json.dumps(result))
        return 0
    try:
        results = benchmark(args)
    except BenchError as exc:
        print(f"api_flood: {exc}", file=sys.stderr)
        return 2
    idle, flooded = results["summary"]["idle"], results["summary"]["flood"]
    print(f"proxy at {args.rate:.0f} req/s; control API flooded at {args.flood_rate:.0f} calls/s")
    print(f"  idle : p50 {idle['p50_ms']} ms  p99 {idle['p99_ms']} ms  errors {idle['errors']}")
    print(
        f"  flood: p50 {flooded['p50_ms']} ms  p99 {flooded['p99_ms']} ms  errors {flooded['errors']}"
    )
    ratios = results["ratio_flood_over_idle"]
    print(
        f"  ratio flood/idle: p50 {ratios.get('p50_ms')}  p99 {ratios.get('p99_ms')}"
        f"  (target <= {TARGET_RATIO}: {'met' if results['within_target'] else 'NOT met'})"
    )
    print(f"  flood statuses: {[f['statuses'] for f in results['floods']]}")
    print(f"  audit: {results['audit']}")
    path = write_results("api_flood", results, RESULTS_DIR)
    print(f"results: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
