"""Trigger -> production on CPU with the tiny Llama: seconds per stage of one real retrain run.

    .venv/bin/python -m benchmarks.loop_latency [--steps 20]

A real vLLM serves the tiny random Llama (``driftloop model tiny``) with runtime LoRA; the run
goes through the same code as production: dataset from operator feedback plus the seed replay,
LoRA training in the niced subprocess, the golden-set gate (candidate vs base, all served by
vLLM), deploy with the alias switch. The tiny model learns nothing useful, so the gate is told to
accept "not worse" (``gate_min_improvement = 0``): the point is the time each stage takes.
Baseline printed beside it: the target of 120 s for the whole loop, and vLLM's own start time.
"""

from __future__ import annotations

import argparse
import json
import time
from datetime import UTC, datetime
from pathlib import Path

from prometheus_client import CollectorRegistry

from driftloop.config import load_config
from driftloop.demo.story import house_format_feedback, write_seed_dataset
from driftloop.service import build_components
from driftloop.vllm_process import VLLMServer
from retrain.training.base_models import build_tiny_llama, cache_dir
from retrain.triggers import Trigger, TriggerDecision, TriggerVerdict

TARGET_S = 120.0
ALIAS = "bench"
RESULTS = Path("benchmarks/results")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20, help="training steps")
    args = parser.parse_args()
    work = cache_dir() / "bench-loop"
    model = build_tiny_llama(cache_dir() / "models" / "tiny-llama")
    started = time.perf_counter()
    server = VLLMServer(model, "tiny", max_model_len=256, log_path=work / "vllm.log")
    with server.start(timeout_s=300):
        vllm_start_s = time.perf_counter() - started
        env = {
            "DRIFTLOOP__CAPTURE__DB_PATH": str(work / f"loop-{int(time.time())}.duckdb"),
            "DRIFTLOOP__CACHE_DIR": str(work / f"cache-{int(time.time())}"),
            "DRIFTLOOP__ALIASES": json.dumps({ALIAS: "tiny"}),
            "DRIFTLOOP__VLLM__SERVED_MODEL_NAME": "tiny",
            "DRIFTLOOP__DRIFT__ENABLED": "false",
            "DRIFTLOOP__JUDGES__ENABLED": "false",
            "DRIFTLOOP__RETRAIN__SEED_DATASET": str(write_seed_dataset(work / "seed.jsonl")),
            "DRIFTLOOP__RETRAIN__BASE_MODEL_DIR": str(model),
            "DRIFTLOOP__RETRAIN__MAX_STEPS": str(args.steps),
            "DRIFTLOOP__RETRAIN__GATE_MIN_IMPROVEMENT": "0",
            "DRIFTLOOP__RETRAIN__GATE_MARGIN": "0.5",
            "DRIFTLOOP__RETRAIN__GATE_MAX_TOKENS": "16",
        }
        cfg = load_config(None, environ=env)
        parts = build_components(cfg, server.base_url, CollectorRegistry())
        assert parts.store is not None and parts.retrain is not None
        loop = parts.retrain.loop
        for i, e in enumerate(house_format_feedback()):
            parts.store.execute(
                "INSERT INTO feedback (id, received_at, model_alias, prompt, answer, request_id, actor)"
                " VALUES (?, ?, ?, ?, ?, NULL, 'benchmark')",
                [f"f{i}", datetime.now(UTC), ALIAS, e.prompt, e.answer],
            )
        decision = TriggerDecision(Trigger.MANUAL, TriggerVerdict.TRIGGERED, "benchmark")
        t0 = time.perf_counter()
        result = loop.run(ALIAS, decision, actor="benchmark")
        total = time.perf_counter() - t0
        parts.close()
    print(f"\nloop run: {result.status}; trigger -> {result.status} in {total:.1f} s")
    print(f"{'stage':<10}{'seconds':>10}{'share':>8}  note")
    for entry in result.timeline:
        share = entry["seconds"] / total if total else 0
        print(f"{entry['stage']:<10}{entry['seconds']:>10.1f}{share:>8.0%}  {entry['note'][:90]}")
    print(f"\ntotal / target ({TARGET_S:.0f} s): {total / TARGET_S:.2f}")
    print(
        f"total / vLLM start of the same model ({vllm_start_s:.1f} s): {total / vllm_start_s:.2f}"
    )
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / "loop_latency.json"
    out.write_text(
        json.dumps(
            {
                "status": result.status,
                "total_s": round(total, 2),
                "target_s": TARGET_S,
                "vllm_start_s": round(vllm_start_s, 2),
                "steps": args.steps,
                "timeline": result.timeline,
            },
            indent=2,
        )
    )
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
