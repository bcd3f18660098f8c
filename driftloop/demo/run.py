"""``driftloop demo``: the service on the embedded default, real traffic through it, what it saw.

The traffic and its console views are in ``driftloop.demo.traffic``, the staged drift phases in
``driftloop.demo.staged_drift``; this module starts and stops the service and closes the loop.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
from rich.table import Table

from driftloop.api.client import ControlClient
from driftloop.config import Config
from driftloop.demo.staged_drift import DRIFT_ALIAS, WINDOW, stage_drift
from driftloop.demo.story import (
    HOUSE_FORMAT,
    HOUSE_POLICY,
    TECH_CATEGORY,
    write_seed_dataset,
    write_teacher_examples,
)
from driftloop.demo.traffic import (
    console,
    replay_prompts,
    sample_prompts,
    show_capture,
    show_metrics,
)
from driftloop.proxy_wiring import exit_on_sigterm
from driftloop.vllm_process import free_port
from retrain.gate.golden import load_golden_set


def run_demo(cfg: Config, *, n_requests: int) -> None:
    """Start ``driftloop serve`` (it starts vLLM), replay prompts, show capture and drift, stop."""
    exit_on_sigterm()  # so that `finally` below stops the service if the demo is terminated
    work = Path("data") / "demo"
    work.mkdir(parents=True, exist_ok=True)
    db_path = work / f"capture-{time.strftime('%Y%m%d-%H%M%S')}.duckdb"
    token = secrets.token_urlsafe(24)
    ports = {"sidecar": free_port(), "api": free_port(), "vllm": free_port()}
    env = _service_env(cfg, work, db_path, ports, token)
    sidecar = f"http://127.0.0.1:{ports['sidecar']}"
    api = f"http://127.0.0.1:{ports['api']}"
    log_path = work / "service.log"
    service = _start_service(env, log_path)
    control = ControlClient(api, token, timeout_s=60)
    try:
        _wait_ready(service, sidecar, log_path, cfg.vllm.start_timeout_s + 60)
        answers = replay_prompts(sidecar, sample_prompts(n_requests))
        show_capture(control, answers)
        show_metrics(sidecar)
        stage_drift(sidecar, control, work)
        _closed_loop(sidecar, control)
        console.print(
            f"\nsidecar (OpenAI API): {sidecar}/v1   metrics: {sidecar}/metrics   "
            f"control API: {api}/api/v1/status   DuckDB: {db_path}"
        )
    finally:
        control.close()
        _stop_service(service)


def _service_env(
    cfg: Config, work: Path, db_path: Path, ports: dict[str, int], token: str
) -> dict[str, str]:
    """The service's environment: the demo's ports, database, aliases, drift and loop settings."""
    return {
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
        # The drift alias trains on teacher labels and replay only: answers the judge liked
        # vary with sampling from run to run, and the demo's story must not depend on luck.
        "DRIFTLOOP__JUDGES__SAMPLE_RATES": json.dumps({DRIFT_ALIAS: 0.0}),
        # The teacher: the served base model under the house policy with three few-shot answers
        # (context distillation), called on vLLM directly so that its calls are not traffic.
        "DRIFTLOOP__TEACHER__ENABLED": "true",
        "DRIFTLOOP__TEACHER__SYSTEM_PROMPT": HOUSE_POLICY,
        "DRIFTLOOP__TEACHER__EXAMPLES": str(
            write_teacher_examples(work / "teacher-examples.jsonl")
        ),
        "DRIFTLOOP__TEACHER__FORMAT_PATTERN": HOUSE_FORMAT,
        "DRIFTLOOP__TEACHER__MAX_TOKENS": "48",
        "DRIFTLOOP__TEACHER__RULES": json.dumps(
            {"refusal": {}, "empty": {}, "length": {"min_chars": 20, "max_chars": 400}}
        ),
        "DRIFTLOOP__DRIFT__REFERENCE_SIZE": str(WINDOW),
        "DRIFTLOOP__DRIFT__WINDOW_SIZE": str(WINDOW),
        "DRIFTLOOP__DRIFT__MIN_SAMPLES": str(WINDOW * 4 // 5),
        "DRIFTLOOP__DRIFT__INTERVAL_S": "5",
        "DRIFTLOOP__DRIFT__EMBED_INTERVAL_S": "2",
        # the loop: retrain when the prompt embeddings drift once, on teacher labels plus a
        # replay of the chit-chat the production model was tuned on, gate on golden_sets/helpdesk
        # and on the live slice (teacher labels held out of training)
        "DRIFTLOOP__RETRAIN__INTERVAL_S": "5",
        "DRIFTLOOP__RETRAIN__DRIFT_CONSECUTIVE": "1",
        "DRIFTLOOP__RETRAIN__QUALITY_BAR": "null",
        "DRIFTLOOP__RETRAIN__VOLUME_EXAMPLES": "null",
        "DRIFTLOOP__RETRAIN__SEED_DATASET": str(write_seed_dataset(work / "seed-dataset.jsonl")),
        "DRIFTLOOP__RETRAIN__DRIFTED_CATEGORIES": '["tech_support"]',
        "DRIFTLOOP__RETRAIN__REPLAY_SHARE": "0.67",
        "DRIFTLOOP__RETRAIN__LEARNING_RATE": "1e-3",
        "DRIFTLOOP__RETRAIN__MAX_STEPS": "40",
        "DRIFTLOOP__RETRAIN__BATCH_SIZE": "8",
        "DRIFTLOOP__RETRAIN__GATE_MAX_TOKENS": "32",
        cfg.api.token_env: token,
    }


def _start_service(env: dict[str, str], log_path: Path) -> subprocess.Popen[bytes]:
    """Start ``driftloop serve`` with its output in ``log_path``."""
    console.rule("driftloop demo")
    console.print(f"starting [bold]driftloop serve[/] (vLLM + sidecar); log: {log_path}")
    with log_path.open("wb") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "driftloop", "serve"], env=env, stdout=log, stderr=log
        )


def _stop_service(service: subprocess.Popen[bytes]) -> None:
    """SIGTERM the service (it flushes captures and stops vLLM), killing it after a minute."""
    service.send_signal(signal.SIGTERM)
    try:
        service.wait(60)
    except subprocess.TimeoutExpired:
        service.kill()
    console.print("service stopped (queued captures flushed, vLLM stopped)")


def _wait_ready(
    service: subprocess.Popen[bytes], sidecar: str, log_path: Path, timeout: float
) -> None:
    """Wait until the sidecar lists models; exit with the log's tail if the service dies."""
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


def _closed_loop(sidecar: str, control: ControlClient) -> None:
    """Drift has tripped: with no operator feedback, the teacher labels the drifted prompts, the
    loop retrains, gates, ships; then a rollback."""
    console.rule("the loop: teacher -> retrain -> gate -> deploy")
    console.print(
        f"no operator feedback is sent for {DRIFT_ALIAS}: labels come from the teacher (the served"
        f" base model under the house policy, answers checked against {HOUSE_FORMAT!r})"
    )
    run = _await_run(control)
    _show_decisions(control.get("/retrain/decisions", {"model": DRIFT_ALIAS, "limit": 200}))
    _show_run(control, run)
    if run["status"] != "shipped":
        raise SystemExit(f"the retrain run ended {run['status']}: {run['error'] or run['reason']}")
    held_out = [ex.prompt for ex in load_golden_set("helpdesk").by_category(TECH_CATEGORY)][::4]
    answers = replay_prompts(
        sidecar, held_out, model=DRIFT_ALIAS, max_tokens=32, title="held-out tech-support prompts"
    )
    for a in answers:
        console.print(f"  {a['prompt']!r} -> {a['answer'][:90]!r}")
    reply = control.post(f"/models/{DRIFT_ALIAS}/rollback", {"reason": "demo: operator rollback"})
    console.print(f"rollback through the API: {DRIFT_ALIAS} now serves {reply['serving']}")


def _show_decisions(decisions: list[dict[str, Any]]) -> None:
    """Print the trigger decisions, oldest first, folding repeats of the same decision."""
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


def _show_run(control: ControlClient, run: dict[str, Any]) -> None:
    """Print the retrain run's timeline, its error, and the gate reports of its adapter."""
    timeline = Table(title=f"retrain run {run['id']}: {run['status']} (trigger: {run['trigger']})")
    for column in ("stage", "seconds", "what happened"):
        timeline.add_column(column, overflow="fold")
    for entry in json.loads(run["timeline"]):
        timeline.add_row(entry["stage"], f"{entry['seconds']:.1f}", entry["note"])
    console.print(timeline)
    if run["error"]:
        console.print(f"[red]error:[/] {run['error']}")
    if run["adapter_id"]:
        for evaluation in control.get("/evaluations", {"adapter_id": run["adapter_id"]}):
            _show_gate_scores(evaluation)
            console.print(f"gate report: {evaluation['report_path']}")


def _show_gate_scores(evaluation: dict[str, Any]) -> None:
    """Print the gate's scores on the drifted category and on the live slice."""
    summary = evaluation["summary"]
    summary = json.loads(summary) if isinstance(summary, str) else summary
    table = Table(title=f"gate on {evaluation['golden_set']} (drifted scopes)")
    for column in ("scope", "metric", "n", "candidate", "production"):
        table.add_column(column)
    for row in summary.get("table", []):
        if row["scope"] in (TECH_CATEGORY, "live_slice"):
            table.add_row(
                row["scope"],
                row["metric"],
                str(row["n"]),
                *(
                    f"{row[k]:.3f}" if row[k] is not None else "—"
                    for k in ("candidate", "production")
                ),
            )
    console.print(table)


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
