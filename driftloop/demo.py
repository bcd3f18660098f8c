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
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import openai
from openai.types.chat import ChatCompletionMessageParam
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn
from rich.table import Table

from driftloop.config import Config
from monitor.corpora import chatterbot_conversations
from monitor.vllm_process import free_port

console = Console()
DEMO_CATEGORIES = ["ai", "computers", "science", "history", "food", "sports"]


def run_demo(cfg: Config, *, n_requests: int) -> None:
    """Start ``driftloop serve`` (it starts vLLM), replay prompts, show the capture, stop."""
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
        "DRIFTLOOP__ALIASES__SUPPORT": cfg.vllm.served_model_name,
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
    try:
        _wait_ready(service, sidecar, log_path, cfg.vllm.start_timeout_s + 60)
        prompts = _prompts(n_requests)
        answers = _replay(sidecar, prompts)
        _show_capture(api, token, answers)
        _show_metrics(sidecar)
        console.print(
            f"\nsidecar (OpenAI API): {sidecar}/v1   metrics: {sidecar}/metrics   "
            f"control API: {api}/api/v1/status   DuckDB: {db_path}"
        )
    finally:
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
                with urllib.request.urlopen(sidecar + "/v1/models", timeout=2) as response:
                    if response.status == 200:
                        console.print(f"ready after {time.monotonic() - started:.0f} s")
                        return
            except OSError:
                pass
            time.sleep(1)
    raise SystemExit(f"service not ready after {timeout:.0f} s; see {log_path}")


def _prompts(n: int) -> list[str]:
    conversations = chatterbot_conversations(DEMO_CATEGORIES)
    rng = random.Random(0)
    return [c.prompt for c in rng.sample(conversations, min(n, len(conversations)))]


def _replay(sidecar: str, prompts: list[str]) -> list[dict[str, Any]]:
    """Send the prompts through the sidecar with the openai SDK, half of them streamed."""
    client = openai.OpenAI(base_url=sidecar + "/v1", api_key="demo", max_retries=0, timeout=120)

    def ask(i: int) -> dict[str, Any]:
        messages: list[ChatCompletionMessageParam] = [{"role": "user", "content": prompts[i]}]
        started = time.perf_counter()
        if i % 2:
            stream = client.chat.completions.create(
                model="support", messages=messages, max_tokens=48, stream=True
            )
            text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
        else:
            reply = client.chat.completions.create(
                model="support", messages=messages, max_tokens=48
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
    with Progress(*columns, console=console) as progress, ThreadPoolExecutor(4) as pool:
        task = progress.add_task("replaying chatterbot-corpus prompts", total=len(prompts))
        for result in pool.map(ask, range(len(prompts))):
            results.append(result)
            progress.advance(task)
    seconds = sum(r["seconds"] for r in results)
    console.print(
        f"{len(results)} requests, mean latency {seconds / len(results):.2f} s (4 concurrent)"
    )
    return results


def _get(url: str, token: str | None = None) -> Any:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    with urllib.request.urlopen(
        urllib.request.Request(url, headers=headers), timeout=10
    ) as response:
        body = response.read()
    return (
        json.loads(body)
        if response.headers.get_content_type() == "application/json"
        else body.decode()
    )


def _show_capture(api: str, token: str, answers: list[dict[str, Any]]) -> None:
    deadline = time.monotonic() + 10  # the writer flushes once a second
    rows: list[dict[str, Any]] = []
    while time.monotonic() < deadline and len(rows) < len(answers):
        rows = _get(f"{api}/api/v1/requests?limit={len(answers)}", token)
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
    text = _get(sidecar + "/metrics")
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
