"""Serving latency on one box while the loop runs beside it: idle, while training, while gating.

    .venv/bin/python -m benchmarks.serving_during_loop [--phase-s 40] [--rate 1] \
        [--gate-concurrency 8 2 1]

One real vLLM (SmolLM2-135M-Instruct, what `make demo` serves) answers a steady open-loop stream
of streamed chat completions (``--rate`` per second, 32 tokens, chit-chat prompts) through the
whole run. Each phase records every request's latency and time to first token:

- ``idle``: nothing else runs (the baseline, measured in the same run);
- ``train``: the real training subprocess (``retrain.training.job``, one niced thread, the loop's
  default LoRA settings) trains on IT-support chats beside it;
- ``gate c=N``: the gate's golden-set generation (``retrain.gate.scores.evaluate_model`` on a
  LoRA candidate, the way ``GoldenGate`` runs it) with N requests in flight
  (``retrain.gate_concurrency``), repeated for the phase.

Prints p50 / p95 / p99 latency and p95 TTFT per phase with its ratio to idle, and writes
benchmarks/results/serving_during_loop-<date>.json.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import secrets
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.train_speed import base_model_dir, domain_a_examples, domain_b_examples

ROOT = Path(__file__).resolve().parent.parent
RESULTS_DIR = ROOT / "benchmarks" / "results"
SERVED = "smollm2"


async def serve_load(
    base_url: str, key: str, prompts: list[str], rate: float, until: float
) -> list[tuple[float, float]]:
    """Open-loop streamed requests at ``rate``/s until ``until``: (latency, ttft) of each."""
    from openai import AsyncOpenAI

    client = AsyncOpenAI(base_url=f"{base_url}/v1", api_key=key, max_retries=0, timeout=120)
    samples: list[tuple[float, float]] = []

    async def one(prompt: str) -> None:
        started = time.monotonic()
        first = None
        stream = await client.chat.completions.create(
            model=SERVED,
            messages=[{"role": "user", "content": prompt}],
            max_tokens=32,
            temperature=0,
            stream=True,
        )
        async for chunk in stream:
            if first is None and chunk.choices and chunk.choices[0].delta.content:
                first = time.monotonic() - started
        latency = time.monotonic() - started
        samples.append((latency, first if first is not None else latency))

    tasks = []
    i = 0
    while time.monotonic() < until:
        tasks.append(asyncio.create_task(one(prompts[i % len(prompts)])))
        i += 1
        await asyncio.sleep(1 / rate)
    await asyncio.gather(*tasks)
    await client.close()
    return samples


def measure(base_url: str, key: str, prompts: list[str], rate: float, seconds: float) -> Any:
    return asyncio.run(serve_load(base_url, key, prompts, rate, time.monotonic() + seconds))


def summary(samples: list[tuple[float, float]]) -> dict[str, float]:
    latency = np.array([s[0] for s in samples])
    ttft = np.array([s[1] for s in samples])
    return {
        "n": len(samples),
        "p50_s": float(np.percentile(latency, 50)),
        "p95_s": float(np.percentile(latency, 95)),
        "p99_s": float(np.percentile(latency, 99)),
        "ttft_p95_s": float(np.percentile(ttft, 95)),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--phase-s", type=float, default=40.0)
    parser.add_argument("--rate", type=float, default=1.0, help="serving requests per second")
    parser.add_argument("--gate-concurrency", type=int, nargs="+", default=[8, 2, 1])
    args = parser.parse_args(argv)

    from openai import OpenAI

    from driftloop.vllm_process import VLLMServer
    from monitor.vllm_admin import VLLMAdmin
    from retrain.data.dataset import build_dataset
    from retrain.gate.golden import load_golden_set
    from retrain.gate.scores import evaluate_model
    from retrain.training.job import run_training
    from retrain.training.spec import TrainingSpec
    from tests.loras import random_lora

    base = base_model_dir()
    prompts = [e["messages"][0]["content"] for e in domain_a_examples(200, seed=1)]
    golden = load_golden_set("helpdesk")
    key = secrets.token_urlsafe(16)
    results: dict[str, Any] = {"date": dt.date.today().isoformat(), "rate": args.rate}
    phases: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory(prefix="serving-during-loop-") as scratch:
        work = Path(scratch)
        candidate = random_lora(base, work / "candidate", seed=1)
        dataset = build_dataset(work / "datasets", domain_b_examples(120, seed=2))
        server = VLLMServer(base, SERVED, max_model_len=1024, api_key=key,
                            log_path=work / "vllm.log")  # fmt: skip
        server.start(timeout_s=400)
        try:
            with VLLMAdmin(server.base_url, api_key=key) as admin:
                admin.load("candidate", str(candidate))
            measure(server.base_url, key, prompts, args.rate, 5)  # warm-up, not counted
            print(f"idle: {args.phase_s:.0f} s at {args.rate:g} req/s", flush=True)
            phases["idle"] = summary(
                measure(server.base_url, key, prompts, args.rate, args.phase_s)
            )

            cancel = threading.Event()
            spec = TrainingSpec(base_model=base, dataset=dataset.path, output_root=work / "out",
                                max_steps=2000, time_limit_s=args.phase_s + 600, threads=1)  # fmt: skip
            trainer = threading.Thread(
                target=lambda: _quietly(run_training, spec, cancel=cancel), daemon=True
            )
            trainer.start()
            time.sleep(20)  # the subprocess loads the model before its steps start
            print("train: training subprocess running", flush=True)
            phases["train"] = summary(
                measure(server.base_url, key, prompts, args.rate, args.phase_s)
            )
            cancel.set()
            trainer.join(60)

            client = OpenAI(base_url=f"{server.base_url}/v1", api_key=key, max_retries=2)
            for concurrency in args.gate_concurrency:
                stop = threading.Event()

                def gate(c: int = concurrency, done: threading.Event = stop) -> None:
                    while not done.is_set():
                        evaluate_model(client, "candidate", golden, max_tokens=64, concurrency=c)

                runner = threading.Thread(target=gate, daemon=True)
                runner.start()
                print(f"gate c={concurrency}: golden-set generation running", flush=True)
                phases[f"gate c={concurrency}"] = summary(
                    measure(server.base_url, key, prompts, args.rate, args.phase_s)
                )
                stop.set()
                runner.join(120)
        finally:
            server.stop()

    idle = phases["idle"]
    print(
        f"\n{'phase':<12} {'n':>4} {'p50':>7} {'p95':>7} {'p99':>7} {'ttft95':>7}   ratio to idle"
    )
    for name, row in phases.items():
        ratios = {k: row[k] / idle[k] for k in ("p50_s", "p95_s", "p99_s", "ttft_p95_s")}
        row.update({f"{k}_ratio": round(v, 2) for k, v in ratios.items()})
        print(
            f"{name:<12} {row['n']:>4} {row['p50_s']:>7.3f} {row['p95_s']:>7.3f}"
            f" {row['p99_s']:>7.3f} {row['ttft_p95_s']:>7.3f}   "
            + " / ".join(f"{v:.2f}" for v in ratios.values())
        )
    results["phases"] = phases
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    out = RESULTS_DIR / f"serving_during_loop-{results['date']}.json"
    out.write_text(json.dumps(results, indent=2))
    print(f"wrote {out}")
    return 0


def _quietly(function: Any, *args: Any, **kwargs: Any) -> None:
    """Run a phase's background work; its cancellation is the expected ending."""
    try:
        function(*args, **kwargs)
    except Exception as exc:  # a cancelled run raises; anything else is printed, not hidden
        if "cancelled" not in str(exc):
            print(f"background work failed: {exc}", flush=True)


if __name__ == "__main__":
    raise SystemExit(main())
