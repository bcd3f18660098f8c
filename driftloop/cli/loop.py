"""CLI commands of the retrain loop; each one is a call to the running service's control API."""

from __future__ import annotations

import json
import urllib.parse
from pathlib import Path
from typing import Any

import click

from driftloop.api.client import ControlApiError, ControlClient, ServiceUnreachableError
from driftloop.config import Config

MODEL = click.option("--model", required=True, help="Public model alias.")
REASON = click.option("--reason", required=True, help="Why: kept in the audit log.")


def call(
    cfg: Config,
    method: str,
    path: str,
    body: dict[str, Any] | None = None,
    params: dict[str, Any] | None = None,
) -> Any:
    """One authenticated request to the control API; errors become a one-line message."""
    try:
        with ControlClient.for_config(cfg) as client:
            return client.request(method, path, params=params, body=body)
    except ServiceUnreachableError as exc:
        raise click.ClickException(f"{exc}; start `driftloop serve`") from None
    except ControlApiError as exc:
        raise click.ClickException(str(exc)) from None


def show(value: Any) -> None:
    click.echo(json.dumps(value, indent=2, default=str))


def register(cli: click.Group, config_option: Any, load: Any) -> None:
    """Add the ``retrain``, ``adapters`` and ``feedback`` commands to ``cli``."""

    @cli.group("retrain")
    def retrain_group() -> None:
        """Retrain runs and triggers: list, force, dry-run, pause, resume, roll back, pin."""

    @retrain_group.command("runs")
    @config_option
    @click.option("--model", default=None, help="Only this alias.")
    @click.option(
        "--limit",
        default=20,
        show_default=True,
        type=click.IntRange(1, 500),
        help="How many runs, newest first.",
    )
    def runs(config_path: Path | None, model: str | None, limit: int) -> None:
        """Recent retrain runs with their stage timeline."""
        params = {"limit": limit, "model": model}
        show(call(load(config_path), "GET", "/retrain/runs", params=params))

    @retrain_group.command("decisions")
    @config_option
    @click.option("--model", default=None, help="Only this alias.")
    def decisions(config_path: Path | None, model: str | None) -> None:
        """Recent trigger decisions, including the ones that started nothing, and why."""
        show(call(load(config_path), "GET", "/retrain/decisions", params={"model": model}))

    @retrain_group.command("now")
    @config_option
    @MODEL
    @REASON
    def now(config_path: Path | None, model: str, reason: str) -> None:
        """Start a retrain now (manual trigger)."""
        show(call(load(config_path), "POST", "/retrain", {"model": model, "reason": reason}))

    @retrain_group.command("cancel")
    @config_option
    @click.argument("run_id")
    @REASON
    def cancel(config_path: Path | None, run_id: str, reason: str) -> None:
        """Stop a run in progress (training is killed at once)."""
        path = f"/retrain/runs/{urllib.parse.quote(run_id)}/cancel"
        show(call(load(config_path), "POST", path, {"reason": reason}))

    @retrain_group.command("dry-run")
    @config_option
    @MODEL
    def dry_run(config_path: Path | None, model: str) -> None:
        """What the triggers would decide now, without running anything."""
        show(call(load(config_path), "POST", "/retrain/dry-run", {"model": model}))

    for action, doc in (
        ("pause", "Stop automatic retraining of an alias."),
        ("resume", "Resume automatic retraining of an alias."),
        ("rollback", "Route an alias back to its previous production version."),
    ):

        def switch(config_path: Path | None, model: str, reason: str, action: str = action) -> None:
            path = f"/models/{urllib.parse.quote(model)}/{action}"
            show(call(load(config_path), "POST", path, {"reason": reason}))

        switch.__doc__ = doc
        retrain_group.command(action)(config_option(MODEL(REASON(switch))))

    @retrain_group.command("pin")
    @config_option
    @MODEL
    @REASON
    @click.option("--adapter", "adapter_id", default=None, help="Adapter id; omit to unpin.")
    def pin(config_path: Path | None, model: str, reason: str, adapter_id: str | None) -> None:
        """Pin an alias to an adapter version (deploys it; the loop stops deploying)."""
        body = {"reason": reason, "adapter_id": adapter_id}
        show(call(load(config_path), "POST", f"/models/{urllib.parse.quote(model)}/pin", body))

    @cli.group("adapters")
    def adapters_group() -> None:
        """Adapter versions: list, lineage, promote, veto."""

    @adapters_group.command("list")
    @config_option
    @click.option("--model", default=None, help="Only this alias.")
    def list_adapters(config_path: Path | None, model: str | None) -> None:
        """Every adapter version with its status."""
        show(call(load(config_path), "GET", "/adapters", params={"model": model}))

    @adapters_group.command("show")
    @config_option
    @click.argument("adapter_id")
    def show_adapter(config_path: Path | None, adapter_id: str) -> None:
        """One adapter with its lineage: dataset, run, evaluations, deployments."""
        show(call(load(config_path), "GET", f"/adapters/{urllib.parse.quote(adapter_id)}"))

    for verb, doc in (
        ("promote", "Ship a version now, overriding the gate."),
        ("veto", "Reject a staged version so it never ships automatically."),
    ):

        def decide(
            config_path: Path | None, adapter_id: str, reason: str, verb: str = verb
        ) -> None:
            path = f"/adapters/{urllib.parse.quote(adapter_id)}/{verb}"
            show(call(load(config_path), "POST", path, {"reason": reason}))

        decide.__doc__ = doc
        adapters_group.command(verb)(config_option(click.argument("adapter_id")(REASON(decide))))

    @cli.command("feedback")
    @config_option
    @MODEL
    @click.option("--prompt", required=True, help="The user's prompt.")
    @click.option("--answer", required=True, help="The answer the model should have given.")
    def feedback(config_path: Path | None, model: str, prompt: str, answer: str) -> None:
        """Send an operator correction: training data for the next retrain."""
        body = {"model": model, "prompt": prompt, "answer": answer}
        show(call(load(config_path), "POST", "/feedback", body))
