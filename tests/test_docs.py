"""The README documents every CLI command, config key and metric; a new one without docs fails."""

from pathlib import Path

import click
from prometheus_client import CollectorRegistry

from driftloop.api.audit import AuditMetrics
from driftloop.cli.main import cli
from driftloop.config import documented_keys
from judges.metrics import JudgeMetrics
from monitor.fleet_metrics import IngestMetrics, ShardMetrics
from monitor.metrics import DriftMetrics, SidecarMetrics
from monitor.routing import RoutingMetrics
from retrain.metrics import LoopMetrics

README = (Path(__file__).resolve().parent.parent / "README.md").read_text()


def _commands(group: click.Group, prefix: str = "driftloop") -> dict[str, click.Command]:
    """Every leaf command by its full name, subcommands of groups included."""
    found: dict[str, click.Command] = {}
    for name, command in group.commands.items():
        if isinstance(command, click.Group):
            found.update(_commands(command, f"{prefix} {name}"))
        else:
            found[f"{prefix} {name}"] = command
    return found


def test_every_cli_command_is_in_the_readme():
    commands = _commands(cli)
    assert "driftloop retrain pin" in commands and "driftloop adapters veto" in commands
    missing = [c for c in commands if f"`{c}`" not in README]
    assert not missing


def test_every_cli_command_and_option_has_help():
    undocumented = [
        f"{name} {param.name}" if param else name
        for name, command in _commands(cli).items()
        for param in [None, *command.params]
        if (param is None and not command.help)
        or (isinstance(param, click.Option) and not param.help)
    ]
    assert not undocumented


def test_every_config_key_is_in_the_readme():
    missing = [key for key in documented_keys() if f"`{key}`" not in README]
    assert not missing


def test_every_metric_is_in_the_readme():
    registry = CollectorRegistry()
    SidecarMetrics(registry)
    DriftMetrics(registry)
    LoopMetrics(registry)
    JudgeMetrics(registry)
    AuditMetrics(registry)
    ShardMetrics(registry)
    RoutingMetrics(registry)
    IngestMetrics(CollectorRegistry())  # shares driftloop_object_store_up with ShardMetrics
    names = []
    for family in registry.collect():
        suffix = "_total" if family.type == "counter" else ""
        names.append(family.name + suffix)
    missing = [name for name in names if f"`{name}" not in README]
    assert not missing


def test_every_alert_and_dashboard_is_in_the_readme():
    import yaml

    from dashboards.build import build_dashboards

    rules = yaml.safe_load(
        (Path(__file__).resolve().parent.parent / "alerts" / "driftloop.rules.yml").read_text()
    )
    alerts = [r["alert"] for g in rules["groups"] for r in g["rules"] if "alert" in r]
    missing = [name for name in alerts if f"`{name}`" not in README]
    titles = [model["title"].split(" / ")[-1] for model in build_dashboards().values()]
    missing += [title for title in titles if f"| {title} |" not in README]
    assert alerts and not missing
