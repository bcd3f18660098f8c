"""Writes a gate decision as JSON, a self-contained HTML page and a PNG bar chart."""

from __future__ import annotations

import base64
import html
import io
import json
from pathlib import Path
from typing import Any

from monitor.fs import write_atomic
from retrain.gate.gate import GateReport
from retrain.gate.scores import OVERALL, ExampleResult, ModelScores

JSON_NAME = "gate-report.json"
HTML_NAME = "gate-report.html"
PNG_NAME = "gate-report.png"
EXAMPLES_PER_CATEGORY = 3


def write_report(report: GateReport, directory: Path) -> dict[str, Path]:
    """Write ``gate-report.{json,html,png}`` into ``directory``; returns their paths by kind."""
    directory.mkdir(parents=True, exist_ok=True)
    png = bar_chart_png(report)
    paths = {
        "json": directory / JSON_NAME,
        "html": directory / HTML_NAME,
        "png": directory / PNG_NAME,
    }
    write_atomic(paths["png"], png)
    write_atomic(paths["json"], json.dumps(report.to_dict(), indent=2, ensure_ascii=False).encode())
    write_atomic(paths["html"], render_html(report, png).encode())
    return paths


def _columns(report: GateReport) -> list[tuple[str, ModelScores]]:
    if report.production_is_base:
        return [("candidate", report.candidate), ("production (= base)", report.production)]
    return [
        ("candidate", report.candidate),
        ("production", report.production),
        ("base", report.base),
    ]


def bar_chart_png(report: GateReport) -> bytes:
    """One panel per metric: candidate vs production vs base, overall and per category."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    columns = _columns(report)
    scopes = [OVERALL, *sorted(report.candidate.categories)]
    metrics = [m for m in report.candidate.overall if report.candidate.overall[m] is not None]
    fig, axes = plt.subplots(1, len(metrics), figsize=(4 * len(metrics), 4), squeeze=False)
    width = 0.8 / len(columns)
    x = np.arange(len(scopes))
    for ax, metric in zip(axes[0], metrics, strict=True):
        for i, (label, scores) in enumerate(columns):
            values = [scores.value(s, metric) for s in scopes]
            heights = [np.nan if v is None else v for v in values]
            ax.bar(x + (i - (len(columns) - 1) / 2) * width, heights, width, label=label)
        ax.set_xticks(x)
        ax.set_xticklabels(scopes, rotation=20)
        ax.set_ylim(0, 1.05)
        ax.set_title(metric + (" (primary)" if metric in report.policy.primary_metrics else ""))
    axes[0][0].set_ylabel("mean over golden examples")
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=len(columns), fontsize=9)
    verdict = "PASSED" if report.passed else "REJECTED"
    fig.suptitle(f"gate {verdict}: {report.candidate.model} on {report.candidate.golden}")
    fig.tight_layout(rect=(0, 0.07, 1, 1))  # room for the legend below
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=90)
    plt.close(fig)
    return buffer.getvalue()


def render_html(report: GateReport, png: bytes) -> str:
    """The whole report as one HTML page (the chart inlined), with example outputs."""
    esc = html.escape
    columns = _columns(report)
    verdict = "PASSED" if report.passed else "REJECTED"
    color = "#2a7" if report.passed else "#c33"
    failed = {(c.scope, c.metric) for c in report.checks if not c.passed}
    parts = [
        "<!doctype html><meta charset=utf-8>",
        f"<title>driftloop gate: {esc(report.candidate.model)} {verdict}</title>",
        "<style>body{font-family:sans-serif;margin:2em;max-width:1200px}"
        "td,th{padding:4px 8px;border-bottom:1px solid #ddd;text-align:left;vertical-align:top}"
        "table{border-collapse:collapse;margin-bottom:1.5em}.bad{background:#fdd}"
        "pre{white-space:pre-wrap;margin:0;font-size:90%}</style>",
        f"<h1>Gate <span style='color:{color}'>{verdict}</span>: "
        f"{esc(report.candidate.model)} on {esc(report.candidate.golden)}</h1>",
        f"<p>{esc(report.summary)}</p>",
        "<h2>Reasons</h2><ul>",
        *(f"<li>{esc(r.message)}</li>" for r in report.reasons),
        "</ul>",
        f"<p>Policy: margin {report.policy.margin}, min improvement "
        f"{report.policy.min_improvement}, primary metrics "
        f"{esc(', '.join(report.policy.primary_metrics))}, drifted categories "
        f"{esc(', '.join(report.policy.drifted_categories) or '(none: overall)')}. Models: "
        + ", ".join(
            f"{esc(label)} = <code>{esc(s.model)}</code> ({s.seconds:.1f} s)"
            for label, s in columns
        )
        + "</p>",
        f'<img alt="scores" src="data:image/png;base64,{base64.b64encode(png).decode()}">',
        judge_html(report.judge),
    ]
    for scope in [OVERALL, *sorted(report.candidate.categories)]:
        rows = [r for r in report.table if r["scope"] == scope]
        n = rows[0]["n"] if rows else 0
        parts.append(f"<h2>{esc(scope)} ({n} examples)</h2><table><tr><th>metric</th>")
        parts += [f"<th>{esc(label)}</th>" for label, _ in columns]
        parts.append("<th>candidate − production</th></tr>")
        for row in rows:
            bad = ' class="bad"' if (scope, row["metric"]) in failed else ""
            primary = " (primary)" if row["metric"] in report.policy.primary_metrics else ""
            cells = "".join(f"<td>{_num(s.value(scope, row['metric']))}</td>" for _, s in columns)
            delta = (
                "—"
                if row["candidate"] is None or row["production"] is None
                else f"{row['candidate'] - row['production']:+.3f}"
            )
            parts.append(
                f"<tr{bad}><td>{esc(row['metric'])}{primary}</td>{cells}<td>{delta}</td></tr>"
            )
        parts.append("</table>")
        if scope != OVERALL:
            parts.append(_examples_html(report, scope, columns))
    return "".join(parts)


def judge_html(judge: dict[str, Any]) -> str:
    """The LLM judge's part: whether it counted and why, and its pairwise verdicts when asked."""
    if not judge:
        return "<h2>LLM judge</h2><p>not configured (retrain.gate_judge is off)</p>"
    esc = html.escape
    parts = [f"<h2>LLM judge</h2><p>{esc(str(judge.get('status', '')))}</p>"]
    pairwise = judge.get("pairwise")
    if pairwise:
        outcomes = ", ".join(f"{k} {v}" for k, v in pairwise["outcomes"].items())
        parts.append(
            f"<p>candidate win rate {_num(pairwise['win_rate'])} (ties count half), position"
            f" consistency {_num(pairwise['position_consistency'])} (both orders asked),"
            f" {pairwise['tokens']} tokens; outcomes: {esc(outcomes or 'none')}</p>"
        )
    return "".join(parts)


def _examples_html(report: GateReport, category: str, columns: list[tuple[str, Any]]) -> str:
    """A few examples, those where candidate and production differ most first."""
    esc = html.escape
    outputs = {label: {e.id: e for e in s.examples} for label, s in columns}
    cand = [e for e in report.candidate.examples if e.category == category]
    prod = outputs[columns[1][0]]

    def gap(e: ExampleResult) -> float:
        other = prod.get(e.id)
        if other is None:
            return 0.0
        return sum(
            abs((e.scores.get(m) or 0.0) - (other.scores.get(m) or 0.0))
            for m in report.policy.primary_metrics
        )

    chosen = sorted(cand, key=lambda e: -gap(e))[:EXAMPLES_PER_CATEGORY]
    head = "".join(f"<th>{esc(label)}</th>" for label, _ in columns)
    rows = []
    for e in chosen:
        cells = "".join(
            f"<td><pre>{esc(outputs[label][e.id].output if e.id in outputs[label] else '')}</pre></td>"
            for label, _ in columns
        )
        rows.append(
            f"<tr><td>{esc(e.id)}</td><td><pre>{esc(e.prompt)}</pre></td>"
            f"<td><pre>{esc(e.expected)}</pre></td>{cells}</tr>"
        )
    return (
        f"<details open><summary>example outputs ({esc(category)})</summary><table>"
        f"<tr><th>id</th><th>prompt</th><th>expected</th>{head}</tr>"
        + "".join(rows)
        + "</table></details>"
    )


def _num(value: float | None) -> str:
    return "—" if value is None else f"{value:.3f}"
