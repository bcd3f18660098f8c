"""Building blocks of the driftloop dashboards: panels and variables on grafana-foundation-sdk.

Every panel queries the pinned Prometheus data source and carries a description (the docs test
and the panel test read both).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from grafana_foundation_sdk.builders import common as common_b
from grafana_foundation_sdk.builders import dashboard as dash
from grafana_foundation_sdk.builders import prometheus, stat, table, text, timeseries
from grafana_foundation_sdk.models import common
from grafana_foundation_sdk.models.dashboard import (
    DashboardCursorSync,
    DataSourceRef,
    DataTransformerConfig,
    Threshold,
    ThresholdsMode,
    VariableRefresh,
    VariableSort,
)
from grafana_foundation_sdk.models.prometheus import PromQueryFormat
from grafana_foundation_sdk.models.text import TextMode

DATASOURCE_UID = "driftloop-prometheus"
DATASOURCE = DataSourceRef(type_val="prometheus", uid=DATASOURCE_UID)
TAGS = ["driftloop"]
# Template variables a panel query may use, with the value that selects everything; the renderer
# and the panel test substitute them the way Grafana does for "All".
MODEL = '{model=~"$model"}'
VARIABLE_ALL = {"$model": ".*"}


@dataclass(frozen=True)
class Query:
    """One PromQL target of a panel."""

    expr: str
    legend: str = ""


def targets(builder: Any, queries: list[Query], *, instant: bool = False) -> Any:
    for ref, query in zip("ABCDEFGH", queries, strict=False):
        target = prometheus.Dataquery().expr(query.expr).ref_id(ref).datasource(DATASOURCE)
        if query.legend:
            target = target.legend_format(query.legend)
        if instant:
            target = target.instant().format(PromQueryFormat.TABLE)
        builder = builder.with_target(target)
    return builder


def thresholds(*steps: tuple[float | None, str]) -> dash.ThresholdsConfig:
    return (
        dash.ThresholdsConfig()
        .mode(ThresholdsMode.ABSOLUTE)
        .steps([Threshold(value=value, color=color) for value, color in steps])
    )


def series(
    title: str,
    description: str,
    queries: list[Query],
    unit: str = "short",
    *,
    span: int = 12,
    line_at: float | None = None,
    log: bool = False,
    min_value: float | None = None,
    max_value: float | None = None,
) -> timeseries.Panel:
    """A time series panel; ``line_at`` draws a red threshold line (Grafana and the PNG alike)."""
    panel = (
        timeseries.Panel()
        .title(title)
        .description(description)
        .datasource(DATASOURCE)
        .unit(unit)
        .span(span)
        .height(8)
        .legend(
            common_b.VizLegendOptions()
            .display_mode(common.LegendDisplayMode.LIST)
            .placement(common.LegendPlacement.BOTTOM)
            .show_legend(True)
        )
    )
    if line_at is not None:
        panel = panel.thresholds(thresholds((None, "green"), (line_at, "red"))).thresholds_style(
            common_b.GraphThresholdsStyleConfig().mode(common.GraphThresholdsStyleMode.LINE)
        )
    if log:
        panel = panel.scale_distribution(
            common_b.ScaleDistributionConfig().type(common.ScaleDistribution.LOG).log(10)
        )
    if min_value is not None:
        panel = panel.min(min_value)
    if max_value is not None:
        panel = panel.max(max_value)
    return targets(panel, queries)


def stat_panel(
    title: str, description: str, queries: list[Query], unit: str = "short", *, span: int = 6
) -> stat.Panel:
    """The latest value of each series, big."""
    panel = (
        stat.Panel()
        .title(title)
        .description(description)
        .datasource(DATASOURCE)
        .unit(unit)
        .span(span)
        .height(8)
        .graph_mode(common.BigValueGraphMode.NONE)
    )
    return targets(panel, queries)


def table_panel(
    title: str, description: str, queries: list[Query], *, span: int = 12
) -> table.Panel:
    """Instant queries side by side, one row per label set (Grafana's merge transformation)."""
    panel = (
        table.Panel()
        .title(title)
        .description(description)
        .datasource(DATASOURCE)
        .span(span)
        .height(8)
        .with_transformation(DataTransformerConfig(id_val="merge", options={}))
    )
    return targets(panel, queries, instant=True)


def note(title: str, content: str, *, span: int = 12) -> text.Panel:
    return (
        text.Panel()
        .title(title)
        .description(content)
        .mode(TextMode.MARKDOWN)
        .content(content)
        .span(span)
        .height(5)
    )


def model_variable(metric: str) -> dash.QueryVariable:
    """``$model``: the aliases that ``metric`` has series for; "All" selects every alias."""
    return (
        dash.QueryVariable("model")
        .label("model alias")
        .datasource(DATASOURCE)
        .query(f"label_values({metric}, model)")
        .refresh(VariableRefresh.ON_TIME_RANGE_CHANGED)
        .sort(VariableSort.ALPHABETICAL_ASC)
        .multi(True)
        .include_all(True)
        .all_value(".*")
    )


def new_dashboard(uid: str, title: str, description: str) -> dash.Dashboard:
    return (
        dash.Dashboard(title)
        .uid(uid)
        .description(description)
        .tags(TAGS)
        .refresh("30s")
        .time("now-6h", "now")
        .timezone("utc")
        .tooltip(DashboardCursorSync.CROSSHAIR)
        .editable()
    )
