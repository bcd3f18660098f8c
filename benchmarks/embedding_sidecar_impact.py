"""What continuous embedding does to the sidecar's latency: in its process, in another, or not at all.

    .venv/bin/python -m benchmarks.embedding_sidecar_impact [--duration 15] [--rounds 3] [--quick]

Everything runs as subprocesses in front of the fast upstream stub (benchmarks/upstream_stub.py):

- a sidecar run by ``driftloop.service.serve``, the code behind ``driftloop serve`` (sidecar and
  control API, ``[vllm] launch = false``), capturing every request into DuckDB;
- ``off``: that sidecar with nothing else running;
- ``thread/<backend>``: another such process that also hosts an embedding loop in a background
  thread (``Embedder(threads=1)`` encoding chatterbot text in batches of 64, non-stop), as the
  sidecar process would host the drift job's embedding;
- ``process/<backend>``: the first sidecar again, with the same loop in a separate process;
- ``…+idle/<backend>``: the same two, with the embedding thread under the SCHED_IDLE policy
  (it runs only when the CPU has nothing else to run; ``--policies normal`` skips them).

The sidecar processes and the embedding process share one CPU; the stub and wrk get the other
(``--no-pin`` lets the kernel place everything). Embedding loops are paused (SIGUSR2) except
during their own runs, so only one configuration loads the machine at a time; runs are
interleaved in rounds with the order rotated. Load is wrk (benchmarks/wrk_post.lua, imported
from benchmarks.proxy_overhead) at one concurrency, non-streaming. Per run: req/s, p50/p99, the
embedding rate achieved meanwhile, and the CPU of the sidecar and of the embedder.

A second section isolates the GIL from network noise: on the sidecar's CPU, a process runs an
asyncio loop that sleeps 1 ms over and over and records how late it wakes, with nothing else,
with an embedding thread in that process, or with the embedding process running beside it.
Results go to the terminal and to benchmarks/results/embedding_sidecar_impact-<date>.json.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import functools
import itertools
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from benchmarks.proxy_overhead import (
    CHAT_PATH,
    BenchError,
    Service,
    StartError,
    Target,
    check_wrk,
    cpu_layout,
    free_port,
    request_body,
    run_wrk,
    start_stub,
    tree_cpu_s,
)
from benchmarks.report import write_results

ROOT = Path(__file__).resolve().parent.parent
RESULTS_DIR = ROOT / "benchmarks" / "results"
DEFAULT_CACHE = Path(os.environ.get("DRIFTLOOP_CACHE_DIR", ROOT / ".cache")) / "embeddings"
EMBED_BATCH = 64
RESUME, PAUSE = signal.SIGUSR1, signal.SIGUSR2

console = Console(width=None if sys.stdout.isatty() else 150)


# --- the embedding loop (in a sidecar thread or in its own process) --------------------------


class EmbedLoop:
    """Encodes corpus text in batches forever; paused until resumed; writes its count to a file."""

    def __init__(
        self, backend: str, threads: int, cache_dir: Path, stats_path: Path, policy: str
    ) -> None:
        from monitor.corpora import chatterbot_conversations
        from monitor.embedding import Embedder

        conversations = chatterbot_conversations()
        texts = [c.prompt for c in conversations] + [c.answer or "" for c in conversations]
        self.batches = itertools.cycle(
            [texts[i : i + EMBED_BATCH] for i in range(0, len(texts), EMBED_BATCH)]
        )
        self.embedder = Embedder(backend=backend, threads=threads, cache_dir=cache_dir)  # type: ignore[arg-type]
        self.stats_path = stats_path
        self.policy = policy
        self.running = threading.Event()
        self.texts = 0
        self.cpu_s = 0.0  # CPU time of the embedding thread itself (torch/onnxruntime at 1 thread
        # run their kernels on the calling thread, so this is the embedding's whole cost)

    def install_signals(self) -> None:
        """SIGUSR1 resumes, SIGUSR2 pauses (call from the main thread)."""
        signal.signal(RESUME, lambda *_: self.running.set())
        signal.signal(PAUSE, lambda *_: self.running.clear())

    def load(self) -> None:
        self.embedder.load()
        self.embedder.encode(next(self.batches))  # warm-up
        self._write_stats()

    def run_forever(self) -> None:
        if self.policy == "idle":  # this thread only (Linux schedules threads one by one)
            from monitor.embedding import idle_priority

            if not idle_priority():
                raise SystemExit("SCHED_IDLE is not available here")
        while True:
            self.running.wait()
            cpu0 = time.thread_time()
            self.texts += len(self.embedder.encode(next(self.batches)))
            self.cpu_s += time.thread_time() - cpu0
            self._write_stats()

    def _write_stats(self) -> None:
        tmp = self.stats_path.with_suffix(".tmp")
        stats = {"texts": self.texts, "cpu_s": self.cpu_s, "time": time.time()}
        tmp.write_text(json.dumps(stats))
        tmp.replace(self.stats_path)


def serve_sidecar(args: argparse.Namespace) -> None:
    """Child: ``driftloop serve`` itself (sidecar + control API), optionally with an embedding thread."""
    from driftloop.config import load_config
    from driftloop.service import serve

    cfg = load_config(Path(args.config))
    if args.embed_backend:
        loop = EmbedLoop(
            args.embed_backend, args.embed_threads, args.cache_dir, args.stats, args.policy
        )
        loop.install_signals()
        loop.load()  # before serving: "ready" means the model is loaded
        threading.Thread(target=loop.run_forever, name="embed", daemon=True).start()
    serve(cfg)


def lag_probe(args: argparse.Namespace) -> None:
    """Child: how late a 1 ms asyncio timer fires, optionally with an embedding thread running.

    This isolates what a thread in the sidecar's process costs its event loop (the GIL) from
    network and upstream noise: no sockets, just the loop waking up every millisecond.
    """
    import asyncio

    loop = None
    if args.embed_backend:
        loop = EmbedLoop(
            args.embed_backend, args.embed_threads, args.cache_dir, args.stats, args.policy
        )
        loop.load()
        loop.running.set()
        threading.Thread(target=loop.run_forever, name="embed", daemon=True).start()
        time.sleep(args.ramp)
    texts0 = loop.texts if loop else 0
    started = time.perf_counter()

    async def probe() -> list[float]:
        lags = []
        deadline = time.perf_counter() + args.lag_seconds
        while time.perf_counter() < deadline:
            t = time.perf_counter()
            await asyncio.sleep(0.001)
            lags.append((time.perf_counter() - t - 0.001) * 1000)
        return lags

    lags = sorted(asyncio.run(probe()))
    elapsed = time.perf_counter() - started
    result = {
        "wakeups": len(lags),
        "lag_p50_ms": lags[len(lags) // 2],
        "lag_p99_ms": lags[int(len(lags) * 0.99)],
        "lag_max_ms": lags[-1],
        "embed_texts_per_s": (loop.texts - texts0) / elapsed if loop else None,
    }
    print("RESULT " + json.dumps(result), flush=True)


def embed_worker(args: argparse.Namespace) -> None:
    """Child: the embedding loop alone in its process."""
    loop = EmbedLoop(
        args.embed_backend, args.embed_threads, args.cache_dir, args.stats, args.policy
    )
    loop.install_signals()
    loop.load()
    loop.run_forever()


# --- parent ----------------------------------------------------------------------------------


@dataclass
class Embedding:
    """A running embedding loop: the process that hosts it and its stats file."""

    backend: str
    service: Service
    stats: Path

    def stats_now(self) -> tuple[int, float, float]:
        """(texts embedded, embedding CPU seconds, wall time) as the loop last wrote them."""
        data = json.loads(self.stats.read_text())
        return int(data["texts"]), float(data["cpu_s"]), float(data["time"])

    def signal(self, sig: signal.Signals) -> None:
        os.kill(self.service.proc.pid, sig)


@dataclass
class Variant:
    name: str  # off | {thread,process}[+idle]/<backend>
    target: Target
    embedding: Embedding | None = None
    runs: list[dict[str, Any]] = field(default_factory=list)


def wait_for_stats(embedding: Embedding, service: Service, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not embedding.stats.exists():
        if service.proc.poll() is not None:
            raise StartError(f"exited with {service.proc.returncode}: {service.tail()}")
        if time.monotonic() > deadline:
            raise StartError(f"no embedding stats after {timeout_s:.0f} s: {service.tail()}")
        time.sleep(0.2)


def launch_sidecar(
    tmp: Path,
    name: str,
    upstream: str,
    cpus: set[int] | None,
    args: argparse.Namespace,
    backend: str | None,
    policy: str,
) -> tuple[Service, str, Path]:
    port, api_port = free_port(), free_port()
    folder = tmp / name.replace("/", "-")
    folder.mkdir()
    config = folder / "driftloop.toml"
    config.write_text(
        f'cache_dir = "{folder / "cache"}"\n'
        f'[sidecar]\nhost = "127.0.0.1"\nport = {port}\nupstream_url = "{upstream}"\n'
        f'[capture]\ndb_path = "{folder / "capture.duckdb"}"\nsample_rate = 1.0\n'
        f"[vllm]\nlaunch = false\n"
        f'[api]\nhost = "127.0.0.1"\nport = {api_port}\n'
    )
    stats = folder / "embed-stats.json"
    argv = [sys.executable, "-m", "benchmarks.embedding_sidecar_impact", "--serve-sidecar"]
    argv += ["--config", str(config), "--stats", str(stats), "--cache-dir", str(args.cache_dir)]
    if backend:
        argv += ["--embed-backend", backend, "--embed-threads", str(args.embed_threads)]
        argv += ["--policy", policy]
    service = Service(argv, folder / "sidecar.log", cpus, _child_env())
    return service, f"http://127.0.0.1:{port}", stats


def launch_worker(
    tmp: Path, backend: str, policy: str, cpus: set[int] | None, args: argparse.Namespace
) -> Embedding:
    folder = tmp / f"worker-{backend}-{policy}"
    folder.mkdir()
    stats = folder / "embed-stats.json"
    argv = [sys.executable, "-m", "benchmarks.embedding_sidecar_impact", "--embed-worker"]
    argv += ["--embed-backend", backend, "--embed-threads", str(args.embed_threads)]
    argv += ["--stats", str(stats), "--cache-dir", str(args.cache_dir), "--policy", policy]
    service = Service(argv, folder / "worker.log", cpus, _child_env())
    return Embedding(backend, service, stats)


def _child_env() -> dict[str, str]:
    return {
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "PYTHONUNBUFFERED": "1",
        "DRIFTLOOP_API_TOKEN": "bench-embedding-impact-token",
    }


def measure(
    wrk: str, variant: Variant, body: Path, args: argparse.Namespace, cpus: set[int] | None
) -> dict[str, Any]:
    embedding = variant.embedding
    side_cpu0 = tree_cpu_s(variant.target.pids)  # before resuming: the ramp is counted on both
    if embedding is not None:
        # Paused, the loop writes nothing: the count now is the count at resume time.
        texts0, emb_cpu0, _ = embedding.stats_now()
        embedding.signal(RESUME)
        t0 = time.time()
        time.sleep(args.ramp)  # let it get going before wrk starts
    summary = run_wrk(wrk, variant.target, body, args.concurrency, args.duration, cpus)
    side_cpu = tree_cpu_s(variant.target.pids) - side_cpu0
    seconds = summary["duration_us"] / 1e6
    embed_rate = embed_cores = None
    if embedding is not None:
        texts1, emb_cpu1, t1 = embedding.stats_now()
        embedding.signal(PAUSE)
        embed_rate = (texts1 - texts0) / (t1 - t0) if t1 > t0 else 0.0
        embed_cores = (emb_cpu1 - emb_cpu0) / (t1 - t0) if t1 > t0 else 0.0
        if embedding.service.proc.pid in variant.target.pids:  # in-process: not the proxy's
            side_cpu -= emb_cpu1 - emb_cpu0
    time.sleep(args.settle)
    lat = summary["latency_us"]
    return {
        "rps": summary["requests"] / seconds,
        "requests": summary["requests"],
        "errors": sum(summary["errors"].values()),
        "p50_ms": _ms(lat["p50"]),
        "p90_ms": _ms(lat["p90"]),
        "p99_ms": _ms(lat["p99"]),
        "max_ms": _ms(lat["max"]),
        # The sidecar process's CPU less its embedding thread's, and the embedding loop's own.
        "sidecar_cpu_cores": side_cpu / seconds,
        "embed_cpu_cores": embed_cores,
        "embed_texts_per_s": embed_rate,
    }


def run_lag_probe(
    tmp: Path, args: argparse.Namespace, cpus: set[int] | None, backend: str, policy: str
) -> dict[str, Any]:
    argv = [sys.executable, "-m", "benchmarks.embedding_sidecar_impact", "--lag-probe"]
    argv += ["--lag-seconds", str(args.lag_seconds), "--ramp", str(args.ramp)]
    argv += ["--cache-dir", str(args.cache_dir), "--stats", str(tmp / "lag-stats.json")]
    if backend:
        argv += ["--embed-backend", backend, "--embed-threads", str(args.embed_threads)]
        argv += ["--policy", policy]
    env = {**os.environ, **_child_env()}
    out = subprocess.run(
        argv,
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=False,
        preexec_fn=functools.partial(os.sched_setaffinity, 0, cpus) if cpus else None,
    )
    for line in out.stdout.splitlines():
        if line.startswith("RESULT "):
            result: dict[str, Any] = json.loads(line.removeprefix("RESULT "))
            return result
    raise StartError(f"lag probe {backend or 'none'} failed: {out.stderr[-2000:]}")


def lag_section(
    tmp: Path, args: argparse.Namespace, cpus: set[int] | None, workers: dict[str, Embedding]
) -> dict[str, list[dict[str, Any]]]:
    """Event-loop lag on the sidecar's CPU: nothing, an embedding thread, an embedding process."""
    names = ["none"]
    for backend in args.backends:
        for policy in args.policies:
            suffix = "" if policy == "normal" else f"+{policy}"
            names += [f"thread{suffix}/{backend}", f"process{suffix}/{backend}"]
    names = [n for n in names if args.process or not n.startswith("process")]
    results: dict[str, list[dict[str, Any]]] = {n: [] for n in names}
    for rnd in range(args.rounds):
        shift = rnd % len(names)
        for name in names[shift:] + names[:shift]:
            kind, _, backend = name.partition("/")
            policy = "idle" if kind.endswith("+idle") else "normal"
            worker = workers.get(name) if kind.startswith("process") else None
            if worker is not None:
                texts0, _, _ = worker.stats_now()
                worker.signal(RESUME)
                t0 = time.time()
            result = run_lag_probe(
                tmp, args, cpus, backend if kind.startswith("thread") else "", policy
            )
            if worker is not None:
                texts1, _, t1 = worker.stats_now()
                worker.signal(PAUSE)
                result["embed_texts_per_s"] = (texts1 - texts0) / (t1 - t0) if t1 > t0 else 0.0
            result["round"] = rnd
            results[name].append(result)
            emb = result["embed_texts_per_s"]
            console.print(
                f"[dim]lag round {rnd + 1} {name:18} p50 {result['lag_p50_ms']:6.2f} ms  "
                f"p99 {result['lag_p99_ms']:7.2f} ms  max {result['lag_max_ms']:7.1f} ms"
                + (f"  embedding {emb:6.1f} texts/s" if emb is not None else "")
                + "[/dim]"
            )
            time.sleep(args.settle)
    table = Table(
        title=f"Event-loop lag of a 1 ms asyncio timer on the sidecar's CPU "
        f"({args.lag_seconds} s per run, mean over {args.rounds} rounds)"
    )
    for column in ("variant", "lag p50 ms", "lag p99 ms", "lag max ms", "embed texts/s"):
        table.add_column(column, justify="left" if column == "variant" else "right")
    for name, runs in results.items():
        emb = [r["embed_texts_per_s"] for r in runs if r["embed_texts_per_s"] is not None]
        table.add_row(
            name,
            _fmt(statistics.fmean(r["lag_p50_ms"] for r in runs)),
            _fmt(statistics.fmean(r["lag_p99_ms"] for r in runs)),
            _fmt(statistics.fmean(r["lag_max_ms"] for r in runs), ".1f"),
            _fmt(statistics.fmean(emb) if emb else None, ".0f"),
        )
    console.print(table)
    return results


def _ms(us: float | None) -> float | None:
    return None if us is None else us / 1000


def benchmark(args: argparse.Namespace) -> dict[str, Any]:
    wrk = check_wrk()
    load_cpus, side_cpus, pinning = cpu_layout(not args.no_pin)
    console.print(f"[dim]{pinning}; embedding processes share the sidecar's CPU(s)[/dim]")
    if any(b.startswith("onnx") for b in args.backends):
        from monitor.embedding import default_model_path
        from monitor.onnx_export import export_onnx

        export_onnx(default_model_path(), args.cache_dir, quantize="onnx-int8" in args.backends)
    started = time.monotonic()
    with contextlib.ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="embed-impact-")))
        direct = start_stub(stack, tmp, load_cpus)
        upstream = direct.url.removesuffix(CHAT_PATH)

        pending: list[tuple[Variant, Service, str, Embedding | None]] = []
        workers: dict[str, Embedding] = {}
        plain, plain_url, _ = launch_sidecar(tmp, "off", upstream, side_cpus, args, None, "")
        stack.callback(plain.stop)
        off = Variant("off", Target("off"))
        pending.append((off, plain, plain_url, None))
        for backend in args.backends:
            for policy in args.policies:
                suffix = "" if policy == "normal" else f"+{policy}"
                name = f"thread{suffix}/{backend}"
                service, url, stats = launch_sidecar(
                    tmp, name, upstream, side_cpus, args, backend, policy
                )
                stack.callback(service.stop)
                hosted = Embedding(backend, service, stats)
                pending.append((Variant(name, Target(name)), service, url, hosted))
                if args.process:
                    name = f"process{suffix}/{backend}"
                    worker = launch_worker(tmp, backend, policy, side_cpus, args)
                    stack.callback(worker.service.stop)
                    workers[name] = worker
                    pending.append((Variant(name, Target(name)), plain, plain_url, worker))
        variants: list[Variant] = []
        for variant, service, url, embedding in pending:
            service.wait_ready(url + "/healthz", args.start_timeout)
            if embedding is not None:
                wait_for_stats(embedding, embedding.service, args.start_timeout)
            variant.target.url, variant.target.pids = url + CHAT_PATH, (service.proc.pid,)
            variant.embedding = embedding
            variants.append(variant)
            console.print(f"[dim]{variant.name}: ready[/dim]")

        body = tmp / "body.json"
        body.write_bytes(request_body(stream=False))
        for variant in variants:
            if variant.name.startswith("process"):
                continue  # same sidecar as off
            run_wrk(wrk, variant.target, body, args.concurrency, 1, load_cpus)  # warm-up

        total = args.rounds * len(variants)
        i = 0
        for rnd in range(args.rounds):
            shift = rnd % len(variants)
            for variant in variants[shift:] + variants[:shift]:
                i += 1
                run = measure(wrk, variant, body, args, load_cpus)
                run["round"] = rnd
                variant.runs.append(run)
                emb = run["embed_texts_per_s"]
                console.print(
                    f"[dim]{i:2}/{total} round {rnd + 1} {variant.name:16} "
                    f"{run['rps']:7,.0f} req/s  p50 {run['p50_ms']:6.2f} ms  "
                    f"p99 {run['p99_ms']:7.2f} ms  errors {run['errors']}"
                    + (f"  embedding {emb:6.1f} texts/s" if emb is not None else "")
                    + "[/dim]"
                )
        rows = summarize(variants)
        print_report(rows, args)
        lag = lag_section(tmp, args, side_cpus, workers) if args.lag else {}
    return {
        "benchmark": "embedding_sidecar_impact",
        "date": dt.datetime.now().isoformat(timespec="seconds"),
        "elapsed_s": round(time.monotonic() - started, 1),
        "settings": {
            "duration_s": args.duration,
            "rounds": args.rounds,
            "concurrency": args.concurrency,
            "mode": "json",
            "embed_threads": args.embed_threads,
            "embed_batch": EMBED_BATCH,
            "policies": args.policies,
            "ramp_s": args.ramp,
            "settle_s": args.settle,
            "backends": args.backends,
            "lag_seconds": args.lag_seconds if args.lag else None,
        },
        "machine": {
            "cpus": len(os.sched_getaffinity(0)),
            "pinning": pinning,
            "loadavg_start": os.getloadavg()[0],
        },
        "results": rows,
        "runs": {v.name: v.runs for v in variants},
        "loop_lag": lag,
    }


def summarize(variants: list[Variant]) -> list[dict[str, Any]]:
    """Means over rounds; ratios to ``off`` taken within each round, then the median."""
    off = next(v for v in variants if v.name == "off")
    off_by_round = {r["round"]: r for r in off.runs}
    rows = []
    for v in variants:

        def mean(key: str, runs: list[dict[str, Any]] = v.runs) -> float | None:
            values = [r[key] for r in runs if r[key] is not None]
            return statistics.fmean(values) if values else None

        def ratio(key: str, runs: list[dict[str, Any]] = v.runs) -> float | None:
            values = [
                r[key] / off_by_round[r["round"]][key] for r in runs if r["round"] in off_by_round
            ]
            return statistics.median(values) if values else None

        rows.append(
            {
                "variant": v.name,
                "rps": mean("rps"),
                "p50_ms": mean("p50_ms"),
                "p99_ms": mean("p99_ms"),
                "max_ms": mean("max_ms"),
                "errors": sum(r["errors"] for r in v.runs),
                "rps_vs_off": ratio("rps"),
                "p50_vs_off": ratio("p50_ms"),
                "p99_vs_off": ratio("p99_ms"),
                "sidecar_cpu_cores": mean("sidecar_cpu_cores"),
                "embed_cpu_cores": mean("embed_cpu_cores"),
                "embed_texts_per_s": mean("embed_texts_per_s"),
            }
        )
    return rows


def print_report(rows: list[dict[str, Any]], args: argparse.Namespace) -> None:
    table = Table(
        title=f"Sidecar under wrk c={args.concurrency} (json) with embedding on/off "
        f"(ms; ratios vs off within a round, median)"
    )
    columns = ("variant", "req/s", "p50", "p99", "max", "rps/off", "p50/off", "p99/off")
    for column in (*columns, "sidecar CPU", "embed CPU", "embed texts/s", "errors"):
        table.add_column(column, justify="left" if column == "variant" else "right")
    for r in rows:
        table.add_row(
            r["variant"],
            _fmt(r["rps"], ",.0f"),
            _fmt(r["p50_ms"], ".2f"),
            _fmt(r["p99_ms"], ".2f"),
            _fmt(r["max_ms"], ".1f"),
            _fmt(r["rps_vs_off"]),
            _fmt(r["p50_vs_off"]),
            _fmt(r["p99_vs_off"]),
            _fmt(r["sidecar_cpu_cores"]),
            _fmt(r["embed_cpu_cores"]),
            _fmt(r["embed_texts_per_s"], ".0f"),
            str(r["errors"]),
        )
    console.print(table)
    console.print(
        "[dim]CPU in cores (CPU-seconds per second): sidecar = its process less the embedding "
        "thread; embed = the embedding loop's thread, wherever it runs[/dim]"
    )


def _fmt(value: float | None, spec: str = ".2f") -> str:
    return "—" if value is None else format(value, spec)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=int, default=15, help="seconds per wrk run")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--backends", default="torch,onnx", help="embedding backends to try")
    parser.add_argument("--embed-threads", type=int, default=1)
    parser.add_argument(
        "--no-process", dest="process", action="store_false", help="skip process/* variants"
    )
    parser.add_argument(
        "--policies",
        default="normal,idle",
        help="scheduling policies of the embedding thread: normal, idle (SCHED_IDLE)",
    )
    parser.add_argument("--ramp", type=float, default=1.0, help="s between resume and load")
    parser.add_argument("--settle", type=float, default=1.0, help="s of quiet after each run")
    parser.add_argument("--start-timeout", type=float, default=120.0)
    parser.add_argument("--no-pin", action="store_true", help="do not pin processes to CPUs")
    parser.add_argument(
        "--no-lag", dest="lag", action="store_false", help="skip the event-loop lag section"
    )
    parser.add_argument("--lag-seconds", type=float, default=10.0, help="seconds per lag run")
    parser.add_argument("--cache-dir", type=Path, default=DEFAULT_CACHE)
    parser.add_argument("--results-dir", type=Path, default=RESULTS_DIR)
    parser.add_argument("--quick", action="store_true", help="3 s runs, one round")
    # internal: the children
    parser.add_argument("--serve-sidecar", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--embed-worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--lag-probe", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--config", help=argparse.SUPPRESS)
    parser.add_argument("--stats", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--embed-backend", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--policy", default="normal", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    args.policies = [p.strip() for p in args.policies.split(",") if p.strip()]
    if set(args.policies) - {"normal", "idle"}:
        parser.error("--policies takes normal and/or idle")
    if args.quick:
        args.duration, args.rounds, args.settle, args.ramp = 3, 1, 0.5, 0.5
        args.lag_seconds = 3.0
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.serve_sidecar:
        serve_sidecar(args)
        return
    if args.embed_worker:
        embed_worker(args)
        return
    if args.lag_probe:
        lag_probe(args)
        return
    try:
        payload = benchmark(args)
    except (BenchError, StartError) as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise SystemExit(2) from None
    console.print(
        f"results written to {write_results('embedding_sidecar_impact', payload, args.results_dir)}"
    )


if __name__ == "__main__":
    main()
