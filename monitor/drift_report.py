"""Renders the latest drift evaluation as a self-contained HTML page and a PNG summary."""

from __future__ import annotations

import base64
import html
import io
import json
from pathlib import Path
from typing import Any

LATEST_RUNS_SQL = """
SELECT model_alias, signal, run_at, score, threshold, p_value, n_reference, n_current, drifted,
       reason, details, n_effective_reference, n_effective_current, effect, p_method,
       adjusted_p_value, min_detectable_shift
FROM drift_runs
QUALIFY row_number() OVER (PARTITION BY model_alias, signal ORDER BY run_at DESC, id DESC) = 1
ORDER BY model_alias, signal
"""


def latest_runs(con: Any) -> list[dict[str, Any]]:
    """The newest row per (alias, signal) from ``drift_runs``, details parsed.

    The ``combined`` row of an alias is its decision; its ``min_detectable_shift`` reads "at
    these window sizes the engine catches a shift of at least this share of traffic to a new
    topic (as distinct as a typical reference cluster) with 90% power".
    """
    cur = con.cursor()
    try:
        cur.execute(LATEST_RUNS_SQL)
        names = [d[0] for d in cur.description]
        rows = [dict(zip(names, values, strict=True)) for values in cur.fetchall()]
    finally:
        cur.close()
    for row in rows:
        row["details"] = json.loads(row["details"]) if row["details"] else {}
        row["run_at"] = str(row["run_at"])
    return rows


def write_report(
    runs: list[dict[str, Any]], html_path: Path, png_path: Path, alpha: float = 0.01
) -> None:
    """Write the HTML report (with the PNG embedded) and the PNG summary next to it."""
    png = summary_png(runs, alpha)
    png_path.parent.mkdir(parents=True, exist_ok=True)
    png_path.write_bytes(png)
    html_path.write_text(_html(runs, png), encoding="utf-8")


def summary_png(runs: list[dict[str, Any]], alpha: float = 0.01) -> bytes:
    """Per alias: cluster shares reference vs current (prompts), and every signal's p-value."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    # An alias whose windows are still too small has nothing to draw: the HTML lists it.
    aliases = sorted({r["model_alias"] for r in runs if r["p_value"] is not None}) or ["(no runs)"]
    fig, axes = plt.subplots(len(aliases), 2, figsize=(12, 3.6 * len(aliases)), squeeze=False)
    for row_axes, alias in zip(axes, aliases, strict=True):
        mine = [r for r in runs if r["model_alias"] == alias]
        shares_ax, p_ax = row_axes
        psi = next((r for r in mine if r["signal"] == "prompt_embedding_psi"), None)
        if psi and psi["details"].get("reference_shares"):
            ref = np.array(psi["details"]["reference_shares"])
            cur = np.array(psi["details"]["current_shares"])
            x = np.arange(len(ref))
            shares_ax.bar(x - 0.2, ref, 0.4, label="reference")
            shares_ax.bar(x + 0.2, cur, 0.4, label="current")
            shares_ax.set_xticks(x)
            shares_ax.set_xlabel("prompt cluster")
            shares_ax.set_ylabel("share of window")
            shares_ax.legend()
        shares_ax.set_title(f"{alias}: prompt clusters, reference vs current")
        scored = [r for r in mine if r["p_value"] is not None]
        if scored:
            # tail p-values go far below the permutation floor: cap the bar, not the ranking
            values = [min(-np.log10(max(r["p_value"], 1e-300)), 30.0) for r in scored]
            colors = ["tab:red" if r["drifted"] else "tab:gray" for r in scored]
            p_ax.barh([r["signal"] for r in scored], values, color=colors)
            p_ax.axvline(-np.log10(alpha), color="black", linestyle="--", linewidth=1)
            p_ax.set_xlabel("-log10 p-value (red: tripped; dashed: alpha)")
        p_ax.set_title(f"{alias}: calibrated signals")
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=90)
    plt.close(fig)
    return buffer.getvalue()


def _html(runs: list[dict[str, Any]], png: bytes) -> str:
    esc = html.escape
    rows = []
    for r in runs:
        style = ' style="background:#fdd"' if r["drifted"] else ""
        rows.append(
            f"<tr{style}><td>{esc(r['model_alias'])}</td><td>{esc(r['signal'])}</td>"
            f"<td>{_num(r['score'])}</td><td>{_num(r['threshold'])}</td>"
            f"<td>{_num(r['p_value'])}</td><td>{_num(r.get('adjusted_p_value'))}</td>"
            f"<td>{esc(r.get('p_method') or '—')}</td><td>{_num(r.get('effect'))}</td>"
            f"<td>{r['n_reference']} ({_num(r.get('n_effective_reference'))})</td>"
            f"<td>{r['n_current']} ({_num(r.get('n_effective_current'))})</td>"
            f"<td>{'yes' if r['drifted'] else 'no'}</td><td>{esc(r['reason'])}</td></tr>"
        )
    clusters = []
    for r in runs:
        grew = r["details"].get("grew") or []
        if r["signal"].endswith("_embedding_psi") and grew:
            items = "".join(
                f"<li>cluster {c['cluster']}: {c['reference_share']:.1%} → {c['current_share']:.1%}"
                f"<ul>{''.join(f'<li>{esc(e)}</li>' for e in c['examples'])}</ul></li>"
                for c in grew
            )
            clusters.append(
                f"<h3>{esc(r['model_alias'])} — {esc(r['signal'])}: clusters that grew</h3>"
                f"<ul>{items}</ul>"
            )
    decisions = []
    for r in runs:
        if r["signal"] != "combined":
            continue
        mde = r.get("min_detectable_shift")
        catch = (
            f"at this window size you will catch &ge; {mde:.0%} shifts"
            if mde is not None
            else "no shift share is caught with 90% power at this window size"
        )
        decisions.append(
            f"<p><b>{esc(r['model_alias'])}</b>: {'DRIFT' if r['drifted'] else 'no drift'}"
            f" — {esc(r['reason'])}. n = {r['n_reference']} / {r['n_current']}, effective n = "
            f"{_num(r.get('n_effective_reference'))} / {_num(r.get('n_effective_current'))}"
            f" (sessions); {catch} (90% power, a new topic as distinct as a typical cluster).</p>"
        )
    image = base64.b64encode(png).decode()
    return (
        "<!doctype html><meta charset=utf-8><title>driftloop drift report</title>"
        "<style>body{font-family:sans-serif;margin:2em}td,th{padding:4px 8px;border-bottom:1px solid #ddd}"
        "table{border-collapse:collapse}</style>"
        f"<h1>driftloop drift report</h1><p>{len(runs)} signals, latest evaluation each.</p>"
        + "".join(decisions)
        + f'<img alt="summary" src="data:image/png;base64,{image}">'
        "<table><tr><th>model</th><th>signal</th><th>score</th><th>threshold</th><th>p-value</th>"
        "<th>adjusted p</th><th>p from</th><th>effect</th><th>n ref (effective)</th>"
        "<th>n cur (effective)</th><th>drifted</th><th>reason</th></tr>"
        + "".join(rows)
        + "</table>"
        + "".join(clusters)
    )


def _num(value: float | None) -> str:
    return "—" if value is None else f"{value:.4g}"
