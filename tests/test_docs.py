"""The README documents every CLI command, config key and metric; a new one without docs fails."""

from pathlib import Path

import click
from prometheus_client import CollectorRegistry

from driftloop.cli import cli
from driftloop.config import documented_keys
from monitor.metrics import DriftMetrics, SidecarMetrics

README = (Path(__file__).resolve().parent.parent / "README.md").read_text()


def _commands(group: click.Group, prefix: str = "driftloop") -> list[str]:
    names = []
    for name, command in group.commands.items():
        if isinstance(command, click.Group):
            names += _commands(command, f"{prefix} {name}")
        else:
            names.append(f"{prefix} {name}")
    return names


def test_every_cli_command_is_in_the_readme():
    missing = [c for c in _commands(cli) if f"`{c}`" not in README]
    assert not missing


def test_every_config_key_is_in_the_readme():
    missing = [key for key in documented_keys() if f"`{key}`" not in README]
    assert not missing


def test_every_metric_is_in_the_readme():
    registry = CollectorRegistry()
    SidecarMetrics(registry)
    DriftMetrics(registry)
    names = []
    for family in registry.collect():
        suffix = "_total" if family.type == "counter" else ""
        names.append(family.name + suffix)
    missing = [name for name in names if f"`{name}" not in README]
    assert not missing
