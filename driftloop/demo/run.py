"""``driftloop demo``: the service on the embedded default, real traffic through it, what it saw."""

from __future__ import annotations

import json
import os
import random
import secrets
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import openai
from openai.types.chat import ChatCompletionMessageParam
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn
from rich.table import Table

from driftloop.api.client import ControlClient
from driftloop.config import Config
from driftloop.demo.story import (
    CHAT_CATEGORIES,
    HOUSE_PREFIX,
    TECH_CATEGORY,
    house_format_feedback,
    write_seed_dataset,
)
from driftloop.service import exit_on_sigterm
from driftloop.vllm_process import free_port
from monitor.corpora import chatterbot_conversations
from retrain.gate.golden import load_golden_set

console = Console(width=None if sys.stdout.isatty() else 140)
DEMO_CATEGORIES = ["ai", "computers", "science", "history", "food", "sports"]
SHIFT_CATEGORY = TECH_CATEGORY
DRIFT_ALIAS = "helpdesk"  # its own alias, so its reference is the staged reference traffic
TRIGGER_SIGNAL = "combined"  # retrain.drift_signals' default: the alias's decision
WINDOW = 100  # per drift window; small so that CPU generation keeps the demo to a few minutes


def run_demo(cfg: Config, *, n_requests: int) -> None:
    """Start ``driftloop serve`` (it starts vLLM), replay prompts, show capture and drift, stop."""
    exit_on_sigterm()  # so that `finally` below stops the service if the demo is terminated
    work = Path("data") / "demo"
    work.mkdir(parents=True, exist_ok=True)
    db_path = work / f"capture-{time.strftime('%Y%m%d-%H%M%S')}.duckdb"
    token = secrets.token_urlsafe(24)
    ports = {"sidecar": free_port(), "api": free_port(), "vllm": free_port()}
    env = {
        **os.environ,
        "DRIFTLOOP__CAPTURE__DB_PATH": str(db_path),
        "DRIFTLOOP__SIDECAR__PORT": str(ports["sidecar"]),
        "DRIFTLOOP__API__PORT": str(ports["api"]),
        "DRIFTLOOP__VLLM__PORT": str(ports["vllm"]),
        "DRIFTLOOP__VLLM__LAUNCH": "true",
        # One JSON value for the whole table: alias names keep their case.
        "DRIFTLOOP__ALIASES": json.dumps(
            {"support": cfg.vllm.served_model_name, DRIFT_ALIAS: cfg.vllm.served_model_name}
        ),
        # The drift alias trains on operator corrections and replay only: answers the judge
        # liked vary with sampling from run to run, and the demo's story must not depend on luck.
        "DRIFTLOOP__JUDGES__SAMPLE_RATES": json.dumps({DRIFT_ALIAS: 0.0}),
        "DRIFTLOOP__DRIFT__REFERENCE_SIZE": str(WINDOW),
        "DRIFTLOOP__DRIFT__WINDOW_SIZE": str(WINDOW),
        "DRIFTLOOP__DRIFT__MIN_SAMPLES": str(WINDOW * 4 // 5),
        "DRIFTLOOP__DRIFT__INTERVAL_S": "5",
        "DRIFTLOOP__DRIFT__EMBED_INTERVAL_S": "2",
        # the loop: retrain when the prompt embeddings drift once, on operator feedback plus a
        # replay of the chit-chat the production model was tuned on, gate on golden_sets/helpdesk
        "DRIFTLOOP__RETRAIN__INTERVAL_S": "5",
        "DRIFTLOOP__RETRAIN__DRIFT_CONSECUTIVE": "1",
        "DRIFTLOOP__RETRAIN__QUALITY_BAR": "null",
        "DRIFTLOOP__RETRAIN__VOLUME_EXAMPLES": "null",
        "DRIFTLOOP__RETRAIN__SEED_DATASET": str(write_seed_dataset(work / "seed-dataset.jsonl")),
        "DRIFTLOOP__RETRAIN__DRIFTED_CATEGORIES": '["tech_support"]',
        "DRIFTLOOP__RETRAIN__REPLAY_SHARE": "0.5",
        "DRIFTLOOP__RETRAIN__LEARNING_RATE": "1e-3",
        "DRIFTLOOP__RETRAIN__MAX_STEPS": "40",
        "DRIFTLOOP__RETRAIN__BATCH_SIZE": "8",
        "DRIFTLOOP__RETRAIN__GATE_MAX_TOKENS": "32",
        cfg.api.token_env: token,
    }
    sidecar = f"http://127.0.0.1:{ports['sidecar']}"
    api = f"http://127.0.0.1:{ports['api']}"
    log_path = work / "service.log"
    console.rule("driftloop demo")
    console.print(f"starting [bold]driftloop serve[/] (vLLM + sidecar); log: {log_path}")
    with log_path.open("wb") as log:
        service = subprocess.Popen(
            [sys.executable, "-m", "driftloop", "serve"], env=env, stdout=log, stderr=log
        )
    control = ControlClient(api, token, timeout_s=60)
    try:
        _wait_ready(service, sidecar, log_path, cfg.vllm.start_timeout_s + 60)
        prompts = _prompts(n_requests)
        answers = _replay(sidecar, prompts)
        _show_capture(control, answers)
        _show_metrics(sidecar)
        _staged_drift(sidecar, control, work)
        _closed_loop(sidecar, control)
        console.print(
            f"\nsidecar (OpenAI API): {sidecar}/v1   metrics: {sidecar}/metrics   "
            f"control API: {api}/api/v1/status   DuckDB: {db_path}"
        )
    finally:
        control.close()
        service.send_signal(signal.SIGTERM)
        try:
            service.wait(60)
        except subprocess.TimeoutExpired:
            service.kill()
        console.print("service stopped (queued captures flushed, vLLM stopped)")


def _wait_ready(
    service: subprocess.Popen[bytes], sidecar: str, log_path: Path, timeout: float
) -> None:
    started = time.monotonic()
    with console.status("waiting for vLLM to load SmolLM2-135M-Instruct and the sidecar to open"):
        while time.monotonic() - started < timeout:
            if service.poll() is not None:
                tail = log_path.read_text(errors="replace").splitlines()[-30:]
                raise SystemExit("driftloop serve exited:\n" + "\n".join(tail))
            try:
                if httpx.get(sidecar + "/v1/models", timeout=2, trust_env=False).is_success:
                    console.print(f"ready after {time.monotonic() - started:.0f} s")
                    return
            except httpx.TransportError:
                pass
            time.sleep(1)
    raise SystemExit(f"service not ready after {timeout:.0f} s; see {log_path}")


def _prompts(n: int, categories: list[str] = DEMO_CATEGORIES, seed: int = 0) -> list[str]:
    conversations = chatterbot_conversations(categories)
    rng = random.Random(seed)
    return [c.prompt for c in rng.sample(conversations, min(n, len(conversations)))]


def _staged_drift(sidecar: str, control: ControlClient, work: Path) -> None:
    """Reference traffic, more of the same (no drift), then a topic shift (drift)."""
    console.rule("staged drift")
    chat = _prompts(3 * WINDOW, list(CHAT_CATEGORIES), seed=1)
    tech = _prompts(WINDOW, [SHIFT_CATEGORY], seed=2)

    def staged(prompts: list[str], title: str) -> None:
        _replay(sidecar, prompts, model=DRIFT_ALIAS, max_tokens=16, concurrency=8, title=title)

    staged(chat[:WINDOW], "reference: chit-chat")
    phases = [
        ("current window: more chit-chat (no drift expected)", chat[WINDOW : 2 * WINDOW], False),
        (f"current window: {SHIFT_CATEGORY} prompts (a topic shift)", tech, True),
    ]
    for title, prompts, expected in phases:
        staged(prompts, title)
        # Only an evaluation that started after the whole phase was captured shows its window.
        _await_captured(control, prompts)
        runs = _await_drift(control, time.time())
        _show_drift(runs)
        drifted = any(
            r["drifted"]
            for r in runs
            if r["model_alias"] == DRIFT_ALIAS and r["signal"] == TRIGGER_SIGNAL
        )
        verdict = f"{TRIGGER_SIGNAL} (what the retrain trigger watches): " + (
            "drift detected" if drifted else "no drift"
        )
        style = "green" if drifted == expected else "red"
        console.print(
            f"verdict: [{style}]{verdict}[/] ({'as' if style == 'green' else 'NOT as'} "
            "expected for this phase)"
        )
    runs = [r for r in runs if r["model_alias"] == DRIFT_ALIAS]
    from monitor.drift_report import write_report

    html_path, png_path = work / "drift-report.html", work / "drift-summary.png"
    write_report(runs, html_path, png_path)
    console.print(f"drift report: {html_path}  summary: {png_path}")
    metrics = _metrics_text(sidecar)
    console.print("[bold]/metrics[/] drift gauges for prompts:")
    for line in metrics.splitlines():
        if (
            line.startswith(("driftloop_drift_detected", "driftloop_drift_p_value"))
            and "prompt_embedding" in line
        ):
            console.print("  " + line)


def _closed_loop(sidecar: str, control: ControlClient) -> None:
    """Drift has tripped: feedback arrives, the loop retrains, gates, ships; then a rollback."""
    console.rule("the loop: retrain -> gate -> deploy")
    feedback = house_format_feedback()
    # Paused while the corrections arrive, so the run trains on all of them rather than on
    # whatever had arrived when a trigger evaluation happened to pass the data floor.
    models = f"/models/{DRIFT_ALIAS}"
    control.post(f"{models}/pause", {"reason": "demo: sending corrections"})
    for e in feedback:
        control.post("/feedback", {"model": DRIFT_ALIAS, "prompt": e.prompt, "answer": e.answer})
    control.post(f"{models}/resume", {"reason": "demo: corrections sent"})
    console.print(
        f"an operator paused {DRIFT_ALIAS}, sent {len(feedback)} corrections in the house format "
        f"('{HOUSE_PREFIX}...') for 5 tech-support problems, and resumed it"
    )
    run = _await_run(control)
    decisions = control.get("/retrain/decisions", {"model": DRIFT_ALIAS, "limit": 200})
    table = Table(title="trigger decisions (oldest first; repeats folded)")
    for column in ("time", "trigger", "decision", "reason"):
        table.add_column(column, overflow="fold")
    shown: list[tuple[str, str, str]] = []
    for d in reversed(decisions):
        key = (d["trigger"], d["decision"], d["reason"])
        if not shown or shown[-1] != key:
            shown.append(key)
            table.add_row(d["decided_at"][11:19], *key)
    console.print(table)
    timeline = Table(title=f"retrain run {run['id']}: {run['status']} (trigger: {run['trigger']})")
    for column in ("stage", "seconds", "what happened"):
        timeline.add_column(column, overflow="fold")
    for entry in json.loads(run["timeline"]):
        timeline.add_row(entry["stage"], f"{entry['seconds']:.1f}", entry["note"])
    console.print(timeline)
    if run["error"]:
        console.print(f"[red]error:[/] {run['error']}")
    if run["adapter_id"]:
        lineage = control.get(f"/adapters/{run['adapter_id']}")
        for evaluation in lineage["evaluations"]:
            console.print(f"gate report: {evaluation['report_path']}")
    if run["status"] != "shipped":
        raise SystemExit(f"the retrain run ended {run['status']}: {run['error'] or run['reason']}")
    held_out = [ex.prompt for ex in load_golden_set("helpdesk").by_category(TECH_CATEGORY)][::4]
    answers = _replay(
        sidecar, held_out, model=DRIFT_ALIAS, max_tokens=32, title="held-out tech-support prompts"
    )
    for a in answers:
        console.print(f"  {a['prompt']!r} -> {a['answer'][:90]!r}")
    reply = control.post(f"{models}/rollback", {"reason": "demo: operator rollback"})
    console.print(f"rollback through the API: {DRIFT_ALIAS} now serves {reply['serving']}")


def _await_run(control: ControlClient, timeout: float = 1200) -> dict[str, Any]:
    """Wait for the first retrain run of the drift alias to finish."""
    deadline = time.monotonic() + timeout
    with console.status("waiting for the retrain trigger, training, the gate and the deploy"):
        while time.monotonic() < deadline:
            runs = control.get("/retrain/runs", {"model": DRIFT_ALIAS})
            if runs and runs[0]["status"] != "running":
                return dict(runs[0])
            time.sleep(3)
    raise SystemExit("no retrain run finished in time; see data/demo/service.log")


def _await_drift(
    control: ControlClient, since: float, timeout: float = 180
) -> list[dict[str, Any]]:
    """Wait for a drift evaluation that saw a full current window captured after ``since``."""
    deadline = time.monotonic() + timeout
    with console.status("waiting for embeddings and the next drift evaluation"):
        while time.monotonic() < deadline:
            runs = control.get("/drift/latest")
            psi = [
                r
                for r in runs
                if r["signal"] == "prompt_embedding_psi" and r["model_alias"] == DRIFT_ALIAS
            ]
            if psi and psi[0]["n_current"] == WINDOW:
                run_at = datetime.fromisoformat(psi[0]["run_at"]).timestamp()
                if run_at > since:
                    return runs
            time.sleep(2)
    raise SystemExit("no drift evaluation arrived in time; see data/demo/service.log")


def _await_captured(control: ControlClient, prompts: list[str], timeout: float = 60) -> None:
    """Wait until the drift alias's newest captured rows are exactly this phase's prompts."""
    wanted = sorted(prompts)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        rows = control.get("/requests", {"model": DRIFT_ALIAS, "limit": len(prompts)})
        if sorted(r["prompt_text"] for r in rows) == wanted:
            return
        time.sleep(0.5)
    raise SystemExit("the phase's requests were not all captured in time; see the service log")


def _show_drift(runs: list[dict[str, Any]]) -> None:
    table = Table(title="drift signals (latest evaluation)")
    for column in ("signal", "score", "threshold", "p-value", "n ref/cur", "drifted", "reason"):
        table.add_column(column, overflow="fold")
    for r in runs:
        if r["model_alias"] != DRIFT_ALIAS or r["p_value"] is None:
            continue
        table.add_row(
            r["signal"],
            f"{r['score']:.4g}",
            f"{r['threshold']:.4g}",
            f"{r['p_value']:.3g}",
            f"{r['n_reference']}/{r['n_current']}",
            "[red]yes[/]" if r["drifted"] else "no",
            r["reason"],
        )
    console.print(table)
    psi = next(
        r for r in runs if r["signal"] == "prompt_embedding_psi" and r["model_alias"] == DRIFT_ALIAS
    )
    for cluster in psi["details"].get("grew", [])[:1]:
        console.print(
            f"cluster {cluster['cluster']} grew {cluster['reference_share']:.0%} -> "
            f"{cluster['current_share']:.0%}; examples: {cluster['examples']}"
        )


def _replay(
    sidecar: str,
    prompts: list[str],
    *,
    model: str = "support",
    max_tokens: int = 48,
    concurrency: int = 4,
    title: str = "replaying chatterbot-corpus prompts",
) -> list[dict[str, Any]]:
    """Send the prompts through the sidecar with the openai SDK, half of them streamed."""
    client = openai.OpenAI(base_url=sidecar + "/v1", api_key="demo", max_retries=0, timeout=120)

    def ask(i: int) -> dict[str, Any]:
        messages: list[ChatCompletionMessageParam] = [{"role": "user", "content": prompts[i]}]
        started = time.perf_counter()
        if i % 2:
            stream = client.chat.completions.create(
                model=model, messages=messages, max_tokens=max_tokens, stream=True
            )
            text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
        else:
            reply = client.chat.completions.create(
                model=model, messages=messages, max_tokens=max_tokens
            )
            text = reply.choices[0].message.content or ""
        return {"prompt": prompts[i], "answer": text, "seconds": time.perf_counter() - started}

    results = []
    columns = [
        *Progress.get_default_columns()[:1],
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    ]
    with Progress(*columns, console=console) as progress, ThreadPoolExecutor(concurrency) as pool:
        task = progress.add_task(title, total=len(prompts))
        for result in pool.map(ask, range(len(prompts))):
            results.append(result)
            progress.advance(task)
    seconds = sum(r["seconds"] for r in results)
    console.print(
        f"{len(results)} requests, mean latency {seconds / len(results):.2f} s "
        f"({concurrency} concurrent)"
    )
    return results


def _metrics_text(sidecar: str) -> str:
    """The sidecar's Prometheus text (not the control API: /metrics needs no token)."""
    response = httpx.get(sidecar + "/metrics", timeout=10, trust_env=False)
    response.raise_for_status()
    return response.text


def _show_capture(control: ControlClient, answers: list[dict[str, Any]]) -> None:
    deadline = time.monotonic() + 10  # the writer flushes once a second
    rows: list[dict[str, Any]] = []
    while time.monotonic() < deadline and len(rows) < len(answers):
        rows = control.get("/requests", {"limit": len(answers)})
        time.sleep(0.5)
    table = Table(title=f"captured in DuckDB (read through the control API): {len(rows)} rows")
    for column in ("stream", "prompt", "response", "finish", "tokens in/out", "latency s"):
        table.add_column(column, overflow="fold")
    for row in rows[:8]:
        table.add_row(
            str(row["stream"]),
            (row["prompt_text"] or "")[:40],
            (row["response_text"] or "")[:60],
            str(row["finish_reason"]),
            f"{row['prompt_tokens']}/{row['completion_tokens']}",
            f"{row['latency_s']:.2f}",
        )
    console.print(table)
    matched = sum(1 for a in answers if any(r["response_text"] == a["answer"] for r in rows))
    console.print(f"{matched}/{len(answers)} captured responses match what the client received")


def _show_metrics(sidecar: str) -> None:
    text = _metrics_text(sidecar)
    wanted = (
        "driftloop_proxy_requests_total",
        "driftloop_capture_enqueued_total",
        "driftloop_capture_rows_written_total",
        "driftloop_capture_dropped_total",
        "driftloop_proxy_overhead_seconds_sum",
        "driftloop_proxy_overhead_seconds_count",
    )
    lines = [
        line for line in text.splitlines() if line.startswith(wanted) and not line.endswith(" 0.0")
    ]
    console.print("[bold]/metrics[/] (non-zero driftloop series):")
    for line in lines:
        console.print("  " + line)
