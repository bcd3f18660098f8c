"""The demo's staged drift: reference traffic, more of the same, then a topic shift.

Each phase is shown with the first drift evaluation whose current window is exactly that
phase's captured prompts, so the verdict printed is the verdict on the traffic just staged.
"""

from __future__ import annotations

import time
from datetime import datetime
from pathlib import Path
from typing import Any

from rich.table import Table

from driftloop.api.client import ControlClient
from driftloop.demo.story import CHAT_CATEGORIES, TECH_CATEGORY, drifted_traffic
from driftloop.demo.traffic import console, fetch_metrics_text, replay_prompts, sample_prompts

SHIFT_CATEGORY = TECH_CATEGORY
DRIFT_ALIAS = "helpdesk"  # its own alias, so its reference is the staged reference traffic
TRIGGER_SIGNAL = "combined"  # retrain.drift_signals' default: the alias's decision
WINDOW = 100  # per drift window; small so that CPU generation keeps the demo to a few minutes


def stage_drift(sidecar: str, control: ControlClient, work: Path) -> None:
    """Reference traffic, more of the same (no drift), then a topic shift (drift)."""
    console.rule("staged drift")
    chat = sample_prompts(3 * WINDOW, list(CHAT_CATEGORIES), seed=1)
    tech = drifted_traffic(WINDOW, seed=2)
    _send_phase(sidecar, chat[:WINDOW], "reference: chit-chat")
    phases = [
        ("current window: more chit-chat (no drift expected)", chat[WINDOW : 2 * WINDOW], False),
        (f"current window: {SHIFT_CATEGORY} prompts (a topic shift)", tech, True),
    ]
    for title, prompts, expected in phases:
        _send_phase(sidecar, prompts, title)
        # Only an evaluation that started after the whole phase was captured shows its window.
        _await_captured(control, prompts)
        runs = _await_drift(control, time.time())
        _show_drift(runs)
        _show_verdict(runs, expected)
    _write_drift_report([r for r in runs if r["model_alias"] == DRIFT_ALIAS], work)
    _show_drift_gauges(sidecar)


def _send_phase(sidecar: str, prompts: list[str], title: str) -> None:
    """Replay one phase's prompts to the drift alias, short answers, eight at a time."""
    replay_prompts(sidecar, prompts, model=DRIFT_ALIAS, max_tokens=16, concurrency=8, title=title)


def _show_verdict(runs: list[dict[str, Any]], expected: bool) -> None:
    """Print what the retrain trigger's signal decided, green when it is what the phase expects."""
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


def _write_drift_report(runs: list[dict[str, Any]], work: Path) -> None:
    """Write the drift alias's last evaluation as the HTML report and the PNG summary."""
    from monitor.drift_report import write_report

    html_path, png_path = work / "drift-report.html", work / "drift-summary.png"
    write_report(runs, html_path, png_path)
    console.print(f"drift report: {html_path}  summary: {png_path}")


def _show_drift_gauges(sidecar: str) -> None:
    """Print the sidecar's drift gauges for the prompt embeddings."""
    metrics = fetch_metrics_text(sidecar)
    console.print("[bold]/metrics[/] drift gauges for prompts:")
    for line in metrics.splitlines():
        if (
            line.startswith(("driftloop_drift_detected", "driftloop_drift_p_value"))
            and "prompt_embedding" in line
        ):
            console.print("  " + line)


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


def _number(value: float | None, spec: str) -> str:
    return "—" if value is None else format(value, spec)


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
    """Print the drift alias's signals and the embedding cluster that grew the most."""
    table = Table(title="drift signals (latest evaluation; `combined` is the decision)")
    columns = ("signal", "score", "threshold", "p", "adjusted p", "n ref/cur (effective)")
    for column in (*columns, "drifted", "reason"):
        table.add_column(column, overflow="fold")
    mine = [r for r in runs if r["model_alias"] == DRIFT_ALIAS and r["p_value"] is not None]
    for r in mine:
        table.add_row(
            r["signal"],
            _number(r["score"], ".4g"),
            _number(r["threshold"], ".4g"),
            _number(r["p_value"], ".3g"),
            _number(r.get("adjusted_p_value"), ".3g"),
            f"{r['n_reference']}/{r['n_current']} ({_number(r.get('n_effective_reference'), '.0f')}"
            f"/{_number(r.get('n_effective_current'), '.0f')})",
            "[red]yes[/]" if r["drifted"] else "no",
            r["reason"],
        )
    console.print(table)
    detectable = [
        r["min_detectable_shift"]
        for name in (TRIGGER_SIGNAL, "prompt_embedding")
        for r in mine
        if r["signal"] == name and r.get("min_detectable_shift") is not None
    ]
    if detectable:
        console.print(
            f"at these window sizes the engine catches shifts of at least {detectable[0]:.0%}"
            " of traffic to a new topic (90% power)"
        )
    psi = next(
        r for r in runs if r["signal"] == "prompt_embedding_psi" and r["model_alias"] == DRIFT_ALIAS
    )
    for cluster in psi["details"].get("grew", [])[:1]:
        console.print(
            f"cluster {cluster['cluster']} grew {cluster['reference_share']:.0%} -> "
            f"{cluster['current_share']:.0%}; examples: {cluster['examples']}"
        )
