"""Sentences per second of the embedding backends, and whether they give the same vectors.

    .venv/bin/python -m benchmarks.embedding_speed [--rounds 3] [--texts prompts] [--quick]

Backends (monitor.embedding): ``torch`` (sentence-transformers), ``onnx`` (the same graph exported
locally, run by onnxruntime) and ``onnx-int8`` (that export, weights quantised per channel), each
at 1 and 2 threads, on real text: the first user turn of every chatterbot-corpus conversation
(2,026 prompts, ~9 tokens each) and/or their answers (2,026, ~19 tokens, a long tail to 256).

Each configuration runs in a fresh subprocess (torch's thread count is process-wide, and the
subprocess gives clean load time, resident memory and CPU time), in interleaved rounds with the
order rotated per round, so drift in machine load spreads over every configuration. Ratios
against torch at the same thread count are taken within a round, then the median over rounds.
Besides texts per second (wall clock) it reports texts per CPU-second of the process: what
embedding costs a machine shared with vLLM, and much less disturbed by other load on the
machine than the wall-clock rate. The recommendation goes by it, at 1 thread.
Output equality: max abs difference and cosine (mean, min) of every backend's vectors against
torch at 1 thread. Results go to the terminal and to benchmarks/results/embedding_speed-<date>.json.
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib.util
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table

from benchmarks.report import write_results

ROOT = Path(__file__).resolve().parent.parent
RESULTS_DIR = ROOT / "benchmarks" / "results"
DEFAULT_CACHE = Path(os.environ.get("DRIFTLOOP_CACHE_DIR", ROOT / ".cache")) / "embeddings"
BACKENDS = ("torch", "onnx", "onnx-int8")
THREADS = (1, 2)
# "Equal output": what float32 rounding differences look like (torch vs onnx is ~3e-7).
EQUAL_MAX_ABS = 1e-4
EQUAL_MIN_COS = 0.9999

console = Console(width=None if sys.stdout.isatty() else 150)


@dataclass
class Measurement:
    backend: str
    threads: int
    round: int
    texts: int
    load_s: float  # imports + model load (+ nothing else: the ONNX export is made beforehand)
    encode_s: float
    cpu_s: float  # user + system CPU of the process during the encode
    max_rss_mib: float

    @property
    def rate(self) -> float:
        return self.texts / self.encode_s

    @property
    def cores(self) -> float:
        return self.cpu_s / self.encode_s

    @property
    def per_cpu_s(self) -> float:
        """Texts per CPU-second: the cost to a shared machine, and less sensitive to contention."""
        return self.texts / self.cpu_s if self.cpu_s > 0 else float("nan")


# --- child: one configuration in a fresh process ---------------------------------------------


def child(args: argparse.Namespace) -> None:
    texts: list[str] = json.loads(Path(args.texts_file).read_text())
    started = time.monotonic()
    from monitor.embedding import Embedder

    embedder = Embedder(backend=args.backend, threads=args.threads, cache_dir=args.cache_dir)
    embedder.load()
    load_s = time.monotonic() - started
    embedder.encode(texts[: args.batch_size], batch_size=args.batch_size)  # warm-up
    cpu0 = _cpu_s()
    t0 = time.perf_counter()
    vectors = embedder.encode(texts, batch_size=args.batch_size)
    encode_s = time.perf_counter() - t0
    cpu_s = _cpu_s() - cpu0
    if args.save:
        np.save(args.save, vectors)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    result = {"load_s": load_s, "encode_s": encode_s, "cpu_s": cpu_s, "max_rss_mib": peak}
    print("RESULT " + json.dumps(result), flush=True)


def _cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


# --- parent ----------------------------------------------------------------------------------


def load_texts(which: str, limit: int | None) -> list[str]:
    from monitor.corpora import chatterbot_conversations

    conversations = chatterbot_conversations()
    texts: list[str] = []
    if which in ("prompts", "both"):
        texts += [c.prompt for c in conversations]
    if which in ("answers", "both"):
        texts += [c.answer for c in conversations if c.answer]
    return texts[:limit] if limit else texts


def run_child(
    backend: str, threads: int, rnd: int, texts_file: Path, n: int, save: Path | None, args: Any
) -> Measurement:
    argv = [sys.executable, "-m", "benchmarks.embedding_speed", "--child"]
    argv += ["--backend", backend, "--threads", str(threads), "--texts-file", str(texts_file)]
    argv += ["--batch-size", str(args.batch_size), "--cache-dir", str(args.cache_dir)]
    if save is not None:
        argv += ["--save", str(save)]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    out = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, check=False)
    for line in out.stdout.splitlines():
        if line.startswith("RESULT "):
            data = json.loads(line.removeprefix("RESULT "))
            return Measurement(backend, threads, rnd, n, **data)
    raise SystemExit(f"{backend}/{threads} failed (exit {out.returncode}):\n{out.stderr[-3000:]}")


def compare(vectors: np.ndarray, reference: np.ndarray) -> dict[str, float]:
    cos = (vectors * reference).sum(axis=1)
    return {
        "max_abs_diff": float(np.abs(vectors - reference).max()),
        "mean_cos": float(cos.mean()),
        "min_cos": float(cos.min()),
    }


def benchmark(args: argparse.Namespace) -> dict[str, Any]:
    from monitor.onnx_export import export_onnx, onnx_export_dir

    texts = load_texts(args.texts, args.limit)
    configs = [(b, t) for b in args.backends for t in args.threads]
    console.print(
        f"[dim]{len(texts):,} {args.texts} texts, batch {args.batch_size}, "
        f"{args.rounds} round(s), {len(configs)} configurations, "
        f"{len(os.sched_getaffinity(0))} CPUs, load average {os.getloadavg()[0]:.2f}[/dim]"
    )
    st_onnx = importlib.util.find_spec("optimum") is not None
    console.print(
        "[dim]sentence-transformers' own backend='onnx' "
        + ("is available (optimum installed)" if st_onnx else "needs optimum-onnx: not installed")
        + "; the ONNX backends here use onnxruntime directly[/dim]"
    )
    if any(b.startswith("onnx") for b in args.backends):
        from monitor.embedding import default_model_path

        started = time.monotonic()
        export_onnx(default_model_path(), args.cache_dir, quantize="onnx-int8" in args.backends)
        folder = onnx_export_dir(default_model_path(), args.cache_dir)
        console.print(
            f"[dim]ONNX export ready in {time.monotonic() - started:.1f} s at {folder}[/dim]"
        )

    measurements: list[Measurement] = []
    with tempfile.TemporaryDirectory(prefix="embedding-speed-") as tmp_name:
        tmp = Path(tmp_name)
        texts_file = tmp / "texts.json"
        texts_file.write_text(json.dumps(texts))
        saved: dict[tuple[str, int], Path] = {}
        total = args.rounds * len(configs)
        i = 0
        for rnd in range(args.rounds):
            shift = rnd % len(configs)
            for backend, threads in configs[shift:] + configs[:shift]:
                i += 1
                save = None
                if (backend, threads) not in saved:
                    save = saved[(backend, threads)] = tmp / f"{backend}-{threads}.npy"
                m = run_child(backend, threads, rnd, texts_file, len(texts), save, args)
                measurements.append(m)
                console.print(
                    f"[dim]{i:2}/{total} round {rnd + 1} {backend:9} threads={threads} "
                    f"{m.rate:8.1f} texts/s  {m.per_cpu_s:7.1f} per CPU-s  {m.cores:4.2f} cores  load {m.load_s:5.1f} s  "
                    f"RSS {m.max_rss_mib:6.0f} MiB[/dim]"
                )
        vectors = {key: np.load(path) for key, path in saved.items()}

    reference_key = ("torch", 1) if ("torch", 1) in vectors else next(iter(vectors))
    equality = {
        f"{b}/{t}": compare(v, vectors[reference_key]) for (b, t), v in sorted(vectors.items())
    }
    rows = summarize(measurements, configs)
    recommendation = recommend(rows, equality)
    print_report(rows, equality, reference_key, recommendation)
    return {
        "benchmark": "embedding_speed",
        "date": dt.datetime.now().isoformat(timespec="seconds"),
        "settings": {
            "texts": args.texts,
            "n_texts": len(texts),
            "batch_size": args.batch_size,
            "rounds": args.rounds,
            "cpus": len(os.sched_getaffinity(0)),
            "sentence_transformers_onnx_available": st_onnx,
        },
        "versions": _versions(),
        "results": rows,
        "equality_vs": f"{reference_key[0]}/{reference_key[1]}",
        "equality": equality,
        "recommendation": recommendation,
        "runs": [
            asdict(m) | {"rate": m.rate, "per_cpu_s": m.per_cpu_s, "cores": m.cores}
            for m in measurements
        ],
    }


def summarize(measurements: list[Measurement], configs: list[tuple[str, int]]) -> list[dict]:
    """Median rate per configuration, and the median over rounds of the within-round ratio."""
    rows = []
    by_round = {(m.backend, m.threads, m.round): m for m in measurements}
    for backend, threads in configs:
        runs = [m for m in measurements if (m.backend, m.threads) == (backend, threads)]
        bases = [(m, by_round.get(("torch", threads, m.round))) for m in runs]
        ratios = [m.rate / base.rate for m, base in bases if base is not None]
        cpu_ratios = [m.per_cpu_s / base.per_cpu_s for m, base in bases if base is not None]
        rows.append(
            {
                "backend": backend,
                "threads": threads,
                "texts_per_s": statistics.median(m.rate for m in runs),
                "texts_per_s_runs": [round(m.rate, 1) for m in runs],
                "vs_torch_same_threads": statistics.median(ratios) if ratios else None,
                "texts_per_cpu_s": statistics.median(m.per_cpu_s for m in runs),
                "cpu_vs_torch_same_threads": statistics.median(cpu_ratios) if cpu_ratios else None,
                "cores_used": statistics.median(m.cores for m in runs),
                "load_s": statistics.median(m.load_s for m in runs),
                "max_rss_mib": max(m.max_rss_mib for m in runs),
            }
        )
    return rows


def equal_output(stats: dict[str, float]) -> bool:
    return stats["max_abs_diff"] <= EQUAL_MAX_ABS and stats["min_cos"] >= EQUAL_MIN_COS


def recommend(rows: list[dict], equality: dict[str, dict[str, float]]) -> dict[str, Any]:
    """The most efficient configuration at 1 thread whose output equals torch's.

    Efficiency is texts per CPU-second, the cost to a machine shared with vLLM and the sidecar
    (and the measure that other load on the machine disturbs least); it must also be at least
    as fast in wall-clock terms.
    """
    one = [r for r in rows if r["threads"] == 1]
    equal = [r for r in one if equal_output(equality[f"{r['backend']}/1"])]
    if not equal:
        return {"backend": "torch", "why": "no other backend gives the same vectors"}
    best = max(equal, key=lambda r: r["texts_per_cpu_s"])
    torch_row = next((r for r in one if r["backend"] == "torch"), None)
    cpu_ratio = best["cpu_vs_torch_same_threads"] or 1.0
    wall_ratio = best["vs_torch_same_threads"] or 1.0
    if torch_row is None or best["backend"] == "torch" or cpu_ratio <= 1.0 or wall_ratio < 1.0:
        return {"backend": "torch", "why": "no backend with equal output is faster than torch"}
    why = (
        f"{best['backend']} gives the same vectors as torch "
        f"(max abs diff {equality[best['backend'] + '/1']['max_abs_diff']:.1e}), embeds "
        f"{cpu_ratio:.2f}x as many texts per CPU-second ({wall_ratio:.2f}x wall-clock) at "
        f"1 thread, loads in {best['load_s']:.1f} s instead of {torch_row['load_s']:.1f} s and "
        f"peaks at {best['max_rss_mib']:.0f} MiB resident instead of "
        f"{torch_row['max_rss_mib']:.0f} MiB"
    )
    faster = [
        r
        for r in one
        if not equal_output(equality[f"{r['backend']}/1"])
        and r["texts_per_cpu_s"] > best["texts_per_cpu_s"]
    ]
    note = ""
    if faster:
        r = faster[0]
        stats = equality[f"{r['backend']}/1"]
        note = (
            f"{r['backend']} is cheaper still ({r['cpu_vs_torch_same_threads']:.2f}x torch per "
            f"CPU-second) but its vectors differ (mean cos {stats['mean_cos']:.4f}, min "
            f"{stats['min_cos']:.4f}): not a drop-in default"
        )
    return {"backend": best["backend"], "why": why, "note": note}


def print_report(
    rows: list[dict],
    equality: dict[str, dict[str, float]],
    reference_key: tuple[str, int],
    recommendation: dict[str, Any],
) -> None:
    table = Table(title="Embedding speed (median over rounds)")
    columns = ("backend", "threads", "texts/s", "× torch", "texts/CPU-s", "× torch (CPU)")
    for column in (*columns, "cores used", "load s", "RSS MiB"):
        table.add_column(column, justify="left" if column == "backend" else "right")
    for r in rows:
        ratio, cpu_ratio = r["vs_torch_same_threads"], r["cpu_vs_torch_same_threads"]
        table.add_row(
            r["backend"],
            str(r["threads"]),
            f"{r['texts_per_s']:,.1f}",
            "—" if ratio is None else f"{ratio:.2f}",
            f"{r['texts_per_cpu_s']:,.1f}",
            "—" if cpu_ratio is None else f"{cpu_ratio:.2f}",
            f"{r['cores_used']:.2f}",
            f"{r['load_s']:.1f}",
            f"{r['max_rss_mib']:.0f}",
        )
    console.print(table)
    eq = Table(title=f"Output against {reference_key[0]} at {reference_key[1]} thread(s)")
    for column in ("config", "max |Δ|", "mean cos", "min cos", "equal"):
        eq.add_column(column, justify="left" if column == "config" else "right")
    for name, stats in equality.items():
        eq.add_row(
            name,
            f"{stats['max_abs_diff']:.2e}",
            f"{stats['mean_cos']:.6f}",
            f"{stats['min_cos']:.6f}",
            "yes" if equal_output(stats) else "no",
        )
    console.print(eq)
    console.print(f"[bold]recommended default:[/bold] {recommendation['backend']}: ")
    console.print(f"  {recommendation['why']}")
    if recommendation.get("note"):
        console.print(f"  {recommendation['note']}")


def _versions() -> dict[str, str]:
    import importlib.metadata as md

    out = {}
    for name in ("torch", "sentence-transformers", "transformers", "onnxruntime", "tokenizers"):
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:
            out[name] = "not installed"
    return out


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--texts", choices=("prompts", "answers", "both"), default="prompts")
    parser.add_argument("--limit", type=int, default=None, help="use only the first N texts")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--backends", default=",".join(BACKENDS))
    parser.add_argument("--threads", default=",".join(map(str, THREADS)))
    parser.add_argument("--cache-dir", type=Path, default=DEFAULT_CACHE)
    parser.add_argument("--results-dir", type=Path, default=RESULTS_DIR)
    parser.add_argument("--quick", action="store_true", help="300 texts, one round")
    # internal: one configuration in a subprocess
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--backend", help=argparse.SUPPRESS)
    parser.add_argument("--texts-file", help=argparse.SUPPRESS)
    parser.add_argument("--save", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        args.threads = int(args.threads)
        return args
    args.backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    unknown = set(args.backends) - set(BACKENDS)
    if unknown:
        parser.error(f"unknown backends {sorted(unknown)}; choose from {BACKENDS}")
    args.threads = [int(t) for t in args.threads.split(",") if t.strip()]
    if args.quick:
        args.rounds, args.limit = 1, 300
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.child:
        child(args)
        return
    payload = benchmark(args)
    console.print(
        f"results written to {write_results('embedding_speed', payload, args.results_dir)}"
    )


if __name__ == "__main__":
    main()
