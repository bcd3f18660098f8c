"""The Grafana dashboards, generated from code with grafana-foundation-sdk and committed as JSON.

``dashboards/json/*.json`` is this module's output (``driftloop dashboards build``); a test checks
the committed files equal it. UIDs are pinned so links, provisioning and pushes stay stable.

>>> sorted(build_dashboards())
['drift.json', 'loop.json', 'quality.json', 'traffic.json']
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from grafana_foundation_sdk.cog.encoder import JSONEncoder

from dashboards.loop_dashboards import loop_dashboard, quality_dashboard
from dashboards.monitor_dashboards import drift_dashboard, traffic_dashboard
from dashboards.panels import DATASOURCE_UID, VARIABLE_ALL

__all__ = ["DATASOURCE_UID", "build_dashboards", "executable", "panel_queries", "write_dashboards"]

FOLDER = Path("dashboards/json")

DASHBOARDS = {
    "drift.json": drift_dashboard,
    "loop.json": loop_dashboard,
    "quality.json": quality_dashboard,
    "traffic.json": traffic_dashboard,
}


def build_dashboards() -> dict[str, dict[str, Any]]:
    """Every dashboard as Grafana JSON, by file name; panel ids numbered in layout order."""
    built = {}
    for name, make in DASHBOARDS.items():
        model = json.loads(json.dumps(make().build(), cls=JSONEncoder))
        for number, panel in enumerate(model["panels"], start=1):
            panel["id"] = number
        model["id"] = None  # Grafana assigns its own database id; the uid is what is pinned
        built[name] = model
    return built


def render_json(model: dict[str, Any]) -> str:
    """The committed form: sorted keys, two-space indent, trailing newline (stable diffs)."""
    return json.dumps(model, indent=2, sort_keys=True) + "\n"


def write_dashboards(folder: Path = FOLDER) -> list[Path]:
    """Regenerate ``folder``'s JSON files; returns the paths written."""
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for name, model in build_dashboards().items():
        path = folder / name
        path.write_text(render_json(model))
        written.append(path)
    return written


@dataclass(frozen=True)
class PanelQuery:
    """One query of one panel, as a reader of the JSON sees it."""

    dashboard: str
    panel: str
    panel_type: str
    expr: str
    legend: str
    instant: bool


def panel_queries(model: dict[str, Any]) -> Iterator[PanelQuery]:
    """Every target of every panel of a dashboard JSON (rows have none)."""
    for panel in model.get("panels", []):
        for target in panel.get("targets", []):
            yield PanelQuery(
                dashboard=model["title"],
                panel=panel["title"],
                panel_type=panel["type"],
                expr=target["expr"],
                legend=target.get("legendFormat", ""),
                instant=bool(target.get("instant")),
            )


def executable(expr: str, rate_interval: str = "5m") -> str:
    """The query Grafana would send with "All" selected and ``$__rate_interval`` = ``rate_interval``."""
    for variable, value in VARIABLE_ALL.items():
        expr = expr.replace(variable, value)
    return expr.replace("$__rate_interval", rate_interval)
