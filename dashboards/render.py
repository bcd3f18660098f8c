"""Draw a dashboard's panels from live Prometheus data into a PNG (matplotlib), no Grafana needed.

The layout follows each panel's ``gridPos`` on Grafana's 24-column grid; time series are lines
with the panel's legend format and threshold line, stat panels show their latest values, tables
their instant values. A panel whose queries return nothing says "no data" in red and is reported.
"""

from __future__ import annotations

import datetime as dt
import textwrap
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter

from dashboards.build import executable
from dashboards.prometheus import PrometheusClient, Series, legend

CELL_IN = 0.62  # inches per grid unit, both ways
ROW_UNIT_IN = 0.42  # Grafana's grid rows are shorter than its columns are wide


@dataclass
class RenderReport:
    """What a render drew: panels with data, and panel titles whose every query came back empty."""

    path: Path
    panels: int = 0
    empty: list[str] = field(default_factory=list)


def render_dashboard(
    model: dict[str, Any],
    prometheus: PrometheusClient,
    path: Path,
    *,
    start: float,
    end: float,
    rate_interval: str = "5m",
) -> RenderReport:
    """Query every panel over [start, end] and write the dashboard as one PNG at ``path``."""
    panels = model.get("panels", [])
    bottom = max((p["gridPos"]["y"] + p["gridPos"]["h"] for p in panels), default=1)
    width_in, height_in = 24 * CELL_IN, bottom * ROW_UNIT_IN + 0.6
    fig = Figure(figsize=(width_in, height_in), dpi=80, layout=None)
    fig.suptitle(
        f"{model['title']}   ({_clock(start)} to {_clock(end)} UTC, data from {prometheus.base_url})",
        x=0.01,
        y=1 - 0.15 / height_in,
        ha="left",
        fontsize=12,
        fontweight="bold",
    )
    report = RenderReport(path)
    step = max(1.0, (end - start) / 240)
    for panel in panels:
        box = _box(panel["gridPos"], width_in, height_in)
        if panel["type"] == "row":
            fig.text(box[0], box[1] + box[3] / 2, panel["title"], fontsize=11, fontweight="bold")
            continue
        ax = fig.add_axes(box)
        ax.set_title(panel["title"], fontsize=9, loc="left")
        report.panels += 1
        drew = _draw(panel, ax, prometheus, start, end, step, rate_interval)
        if not drew:
            report.empty.append(panel["title"])
            ax.text(0.5, 0.5, "no data", color="red", ha="center", va="center", fontsize=12)
            ax.set_xticks([])
            ax.set_yticks([])
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    return report


def _clock(t: float) -> str:
    return dt.datetime.fromtimestamp(t, dt.UTC).strftime("%Y-%m-%d %H:%M:%S")


def _box(
    grid: dict[str, int], width_in: float, height_in: float
) -> tuple[float, float, float, float]:
    """Figure-relative [left, bottom, width, height] of a grid cell, with room for titles."""
    pad_x, pad_top, pad_bottom = 0.6, 0.35, 0.45
    left = (grid["x"] * CELL_IN + pad_x) / width_in
    width = (grid["w"] * CELL_IN - pad_x - 0.1) / width_in
    top_in = 0.6 + grid["y"] * ROW_UNIT_IN
    if grid["h"] <= 1:  # a row header
        return (left, 1 - (top_in + ROW_UNIT_IN) / height_in, width, ROW_UNIT_IN / height_in)
    height = max(0.2, grid["h"] * ROW_UNIT_IN - pad_top - pad_bottom)
    bottom = height_in - top_in - pad_top - height
    return (left, bottom / height_in, width, height / height_in)


def _draw(
    panel: dict[str, Any],
    ax: Axes,
    prometheus: PrometheusClient,
    start: float,
    end: float,
    step: float,
    rate_interval: str,
) -> bool:
    kind = panel["type"]
    if kind == "text":
        content = panel.get("options", {}).get("content", "")
        ax.axis("off")
        ax.text(0, 1, textwrap.fill(content, 160), va="top", fontsize=8, wrap=True)
        return True
    targets = panel.get("targets", [])
    if kind == "timeseries":
        return _draw_series(panel, ax, prometheus, targets, start, end, step, rate_interval)
    if kind == "stat":
        return _draw_stat(panel, ax, prometheus, targets, end, rate_interval)
    return _draw_table(panel, ax, prometheus, targets, end, rate_interval)


def _draw_stat(
    panel: dict[str, Any],
    ax: Axes,
    prometheus: PrometheusClient,
    targets: list[dict[str, Any]],
    end: float,
    rate_interval: str,
) -> bool:
    """Latest value per series, large, like Grafana's stat panel."""
    rows = [
        (legend(target.get("legendFormat", ""), series.labels), series.points[-1][1])
        for target in targets
        for series in prometheus.query(executable(target["expr"], rate_interval), end)
    ]
    if not rows:
        return False
    ax.axis("off")
    width = max(len(name) for name, _ in rows)
    lines = [f"{name:<{width}}  {_fmt(value, panel)}" for name, value in rows[:10]]
    ax.text(
        0, 1, "\n".join(lines), va="top", family="monospace", fontsize=14 if len(rows) <= 4 else 9
    )
    return True


def _draw_table(
    panel: dict[str, Any],
    ax: Axes,
    prometheus: PrometheusClient,
    targets: list[dict[str, Any]],
    end: float,
    rate_interval: str,
) -> bool:
    """One row per label set, one column per query (Grafana's merge transformation)."""
    columns = [target.get("legendFormat") or target["refId"] for target in targets]
    table: dict[str, dict[str, float]] = {}
    for column, target in zip(columns, targets, strict=True):
        for series in prometheus.query(executable(target["expr"], rate_interval), end):
            table.setdefault(_label_text(series.labels), {})[column] = series.points[-1][1]
    if not table:
        return False
    ax.axis("off")
    width = max(len(key) for key in table)
    lines = [f"{'':<{width}}" + "".join(f"{c:>12}" for c in columns)]
    for key in sorted(table)[:16]:
        cells = "".join(
            f"{_fmt(table[key][c], panel) if c in table[key] else '-':>12}" for c in columns
        )
        lines.append(f"{key:<{width}}{cells}")
    if len(table) > 16:
        lines.append(f"... and {len(table) - 16} more rows")
    ax.text(0, 1, "\n".join(lines), va="top", family="monospace", fontsize=7)
    return True


def _draw_series(
    panel: dict[str, Any],
    ax: Axes,
    prometheus: PrometheusClient,
    targets: list[dict[str, Any]],
    start: float,
    end: float,
    step: float,
    rate_interval: str,
) -> bool:
    drawn = 0
    for target in targets:
        expr = executable(target["expr"], rate_interval)
        result: list[Series] = prometheus.query_range(expr, start, end, step)
        for series in result[:12]:
            xs = [(t - end) / 60 for t, _ in series.points]
            ys = [v for _, v in series.points]
            ax.plot(
                xs, ys, linewidth=1.2, label=legend(target.get("legendFormat", ""), series.labels)
            )
            drawn += 1
    if not drawn:
        return False
    defaults = panel.get("fieldConfig", {}).get("defaults", {})
    custom = defaults.get("custom", {})
    if custom.get("thresholdsStyle", {}).get("mode") == "line":
        for stepdef in defaults.get("thresholds", {}).get("steps", []):
            if stepdef.get("value") is not None:
                ax.axhline(stepdef["value"], color="red", linestyle="--", linewidth=1)
    if custom.get("scaleDistribution", {}).get("type") == "log":
        ax.set_yscale("log")
    if "min" in defaults or "max" in defaults:
        ax.set_ylim(defaults.get("min"), defaults.get("max"))
    ax.set_xlim((start - end) / 60, 0)
    ax.set_xlabel("minutes before the end", fontsize=7)
    unit = defaults.get("unit", "short")
    if unit == "s":
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: _seconds(v)))
    elif unit != "short":
        ax.set_ylabel({"reqps": "requests/s", "ops": "per second"}.get(unit, unit), fontsize=7)
    ax.tick_params(labelsize=7)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=6, loc="upper left", ncol=2, framealpha=0.6)
    return True


def _label_text(labels: dict[str, str]) -> str:
    skip = {"__name__", "job", "instance"}
    return " ".join(f"{k}={v}" for k, v in sorted(labels.items()) if k not in skip) or "(all)"


def _seconds(value: float) -> str:
    return f"{value * 1000:.3g} ms" if abs(value) < 1 else f"{value:.3g} s"


def _fmt(value: float, panel: dict[str, Any]) -> str:
    unit = panel.get("fieldConfig", {}).get("defaults", {}).get("unit", "short")
    return _seconds(value) if unit == "s" else f"{value:.4g}"
