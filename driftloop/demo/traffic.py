"""Demo traffic through the sidecar (openai SDK) and the console views of what it captured."""

from __future__ import annotations

import random
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import openai
from openai.types.chat import ChatCompletionMessageParam
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn
from rich.table import Table

from driftloop.api.client import ControlClient
from monitor.corpora import chatterbot_conversations

console = Console(width=None if sys.stdout.isatty() else 140)
DEMO_CATEGORIES = ["ai", "computers", "science", "history", "food", "sports"]


def sample_prompts(n: int, categories: list[str] = DEMO_CATEGORIES, seed: int = 0) -> list[str]:
    """Return up to ``n`` chatterbot-corpus prompts of ``categories``, sampled with ``seed``."""
    conversations = chatterbot_conversations(categories)
    rng = random.Random(seed)
    return [c.prompt for c in rng.sample(conversations, min(n, len(conversations)))]


def replay_prompts(
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


def fetch_metrics_text(sidecar: str) -> str:
    """The sidecar's Prometheus text (not the control API: /metrics needs no token)."""
    response = httpx.get(sidecar + "/metrics", timeout=10, trust_env=False)
    response.raise_for_status()
    return response.text


def show_capture(control: ControlClient, answers: list[dict[str, Any]]) -> None:
    """Print the captured rows and how many match what the client received."""
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


def show_metrics(sidecar: str) -> None:
    """Print the sidecar's non-zero proxy and capture series."""
    text = fetch_metrics_text(sidecar)
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
