"""Dashboards: the committed JSON is the generator's output, panels are documented and point at the
pinned data source, provisioning is valid, and every exported metric is shown or alerted on."""

from __future__ import annotations

import json
import re
from pathlib import Path

import yaml
from click.testing import CliRunner
from prometheus_client import CollectorRegistry

from dashboards.build import DATASOURCE_UID, build_dashboards, executable, panel_queries
from driftloop.cli.main import cli
from judges.metrics import JudgeMetrics
from monitor.metrics import DriftMetrics, SidecarMetrics
from retrain.metrics import LoopMetrics

REPO = Path(__file__).resolve().parents[2]
JSON_DIR = REPO / "dashboards" / "json"
PROVISIONING = REPO / "dashboards" / "provisioning"


def committed() -> dict[str, dict]:
    return {p.name: json.loads(p.read_text()) for p in sorted(JSON_DIR.glob("*.json"))}


def test_committed_json_is_the_generators_output():
    assert committed() == build_dashboards()
    result = CliRunner().invoke(cli, ["dashboards", "build", "--check", "--out", str(JSON_DIR)])
    assert result.exit_code == 0, result.output


def test_build_check_fails_on_a_stale_file_and_build_rewrites_it(tmp_path):
    runner = CliRunner()
    assert runner.invoke(cli, ["dashboards", "build", "--out", str(tmp_path)]).exit_code == 0
    (tmp_path / "drift.json").write_text("{}\n")
    stale = runner.invoke(cli, ["dashboards", "build", "--check", "--out", str(tmp_path)])
    assert stale.exit_code == 1 and "drift.json" in stale.output
    assert runner.invoke(cli, ["dashboards", "build", "--out", str(tmp_path)]).exit_code == 0
    assert json.loads((tmp_path / "drift.json").read_text()) == build_dashboards()["drift.json"]


def test_the_four_dashboards_have_pinned_unique_uids():
    models = build_dashboards()
    uids = {name: model["uid"] for name, model in models.items()}
    assert uids == {
        "drift.json": "driftloop-drift",
        "loop.json": "driftloop-loop",
        "quality.json": "driftloop-quality",
        "traffic.json": "driftloop-traffic",
    }
    for model in models.values():
        ids = [panel["id"] for panel in model["panels"]]
        assert ids == list(range(1, len(ids) + 1))


def test_every_panel_is_documented_and_queries_the_pinned_datasource():
    for model in build_dashboards().values():
        for panel in model["panels"]:
            if panel["type"] == "row":
                continue
            assert len(panel.get("description", "")) > 20, f"{model['title']}: {panel['title']}"
            if panel["type"] == "text":
                continue
            assert panel["datasource"] == {"type": "prometheus", "uid": DATASOURCE_UID}
            assert panel["targets"], panel["title"]
            for target in panel["targets"]:
                assert target["datasource"]["uid"] == DATASOURCE_UID
        for variable in model["templating"].get("list", []):
            assert variable["datasource"]["uid"] == DATASOURCE_UID


def test_required_views_are_there():
    titles = {
        model["title"]: {q.panel for q in panel_queries(model)}
        for model in build_dashboards().values()
    }
    exprs = " ".join(q.expr for m in build_dashboards().values() for q in panel_queries(m))
    assert "Score / calibrated threshold" in titles["driftloop / Drift"]
    assert (
        "p-value" in titles["driftloop / Drift"] and "Window sizes" in titles["driftloop / Drift"]
    )
    assert "Judge score mean (1-5)" in titles["driftloop / Quality"]
    assert "Gate verdicts per day" in titles["driftloop / Quality"]
    assert {"Deployed adapter", "Rollbacks per day", "Mean stage duration (last day)"} <= titles[
        "driftloop / Loop"
    ]
    assert "vllm:num_requests_running" in exprs


def test_template_variables_are_substituted_for_execution():
    expr = 'rate(x{model=~"$model"}[$__rate_interval])'
    assert executable(expr, "30s") == 'rate(x{model=~".*"}[30s])'


def test_provisioning_files_point_grafana_at_the_datasource_and_the_json():
    [datasource_file] = (PROVISIONING / "datasources").glob("*.yml")
    datasources = yaml.safe_load(datasource_file.read_text())
    assert datasources["apiVersion"] == 1
    [prometheus] = datasources["datasources"]
    assert prometheus["uid"] == DATASOURCE_UID and prometheus["type"] == "prometheus"
    [provider_file] = (PROVISIONING / "dashboards").glob("*.yml")
    providers = yaml.safe_load(provider_file.read_text())
    assert providers["apiVersion"] == 1
    [provider] = providers["providers"]
    assert provider["type"] == "file"
    compose = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    mounts = compose["services"]["grafana"]["volumes"]
    assert f"./dashboards/json:{provider['options']['path']}:ro" in mounts


def exported_series() -> set[str]:
    """Every sample name driftloop's metric classes export, read from a fresh registry."""
    registry = CollectorRegistry()
    SidecarMetrics(registry)
    DriftMetrics(registry)
    LoopMetrics(registry)
    JudgeMetrics(registry)
    names = set()
    for family in registry.collect():
        suffixes = {
            "counter": ["_total", "_created"],
            "histogram": ["_bucket", "_sum", "_count", "_created"],
        }.get(family.type, [""])
        names |= {family.name + suffix for suffix in suffixes}
    return names


def used_text() -> str:
    rules = (REPO / "alerts" / "driftloop.rules.yml").read_text()
    panels = [q.expr for m in build_dashboards().values() for q in panel_queries(m)]
    return rules + "\n" + "\n".join(panels)


def unshown(names: set[str], used: str, exempt: dict) -> list[str]:
    """The names that appear in no rule or panel query and are not exempted."""
    missing = []
    for name in sorted(names):
        if name in (exempt["metrics"] or {}) or name.endswith(tuple(exempt["suffixes"])):
            continue
        family = re.sub(r"(_total|_bucket|_sum|_count)$", "", name)
        # A histogram counts as shown when any of its series is (quantiles use _bucket only).
        if not re.search(rf"\b{re.escape(family)}(_total|_bucket|_sum|_count)?\b", used):
            missing.append(name)
    return missing


def test_every_exported_metric_is_on_a_dashboard_in_a_rule_or_listed_as_not():
    exempt = yaml.safe_load((REPO / "dashboards" / "metrics-not-shown.yml").read_text())
    assert all(reason.strip() for reason in exempt["suffixes"].values())
    assert all(reason.strip() for reason in (exempt["metrics"] or {}).values())
    names = exported_series()
    assert len(names) > 40 and "driftloop_judge_score_mean" in names
    missing = unshown(names, used_text(), exempt)
    assert not missing, f"exported but on no dashboard, in no rule, not listed: {missing}"


def test_the_coverage_check_notices_an_unshown_metric():
    exempt = yaml.safe_load((REPO / "dashboards" / "metrics-not-shown.yml").read_text())
    names = {
        "driftloop_unshown_widgets",
        "driftloop_unshown_total",
        "driftloop_proxy_requests_total",
    }
    assert unshown(names, used_text(), exempt) == [
        "driftloop_unshown_total",
        "driftloop_unshown_widgets",
    ]


def test_render_names_a_bad_range_before_querying_anything():
    result = CliRunner().invoke(
        cli, ["dashboards", "render", "--prometheus", "http://127.0.0.1:9", "--range", "soon"]
    )
    assert result.exit_code == 2 and "'soon' is not a duration" in result.output
