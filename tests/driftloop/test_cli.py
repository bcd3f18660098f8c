"""The CLI, through click's runner: config checks, reading captures with and without a service."""

import json

from click.testing import CliRunner
from prometheus_client import CollectorRegistry

from driftloop.cli.main import cli
from driftloop.service import build_components
from monitor.capture import CapturedExchange
from tests.conftest import make_config
from tests.hardening.api_running import running_api


def test_check_config_prints_the_merged_config(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text("[capture]\nsample_rate = 0.5\n")
    result = CliRunner().invoke(
        cli, ["check-config", "--config", str(path)], env={"DRIFTLOOP__SIDECAR__PORT": "9"}
    )
    assert result.exit_code == 0, result.output
    printed = json.loads(result.stdout)
    assert printed["capture"]["sample_rate"] == 0.5 and printed["sidecar"]["port"] == 9


def test_check_config_names_the_bad_key(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text("[capture]\nbatch_size = -1\n")
    result = CliRunner().invoke(cli, ["check-config", "--config", str(path)])
    assert result.exit_code == 1
    assert "capture.batch_size = -1" in result.output


def test_requests_reads_the_file_when_no_service_runs(tmp_path):
    cfg = make_config(tmp_path, api={"port": 9})  # nothing listens on port 9
    parts = build_components(cfg, "http://127.0.0.1:9", CollectorRegistry())
    writer = parts.sidecar.writer
    writer.start()
    writer.submit(
        CapturedExchange(
            request_id="r1",
            started_at=1.0,
            route="completions",
            model_alias="m",
            served_model="m",
            stream=False,
            request_body=b'{"prompt": "hi"}',
            status_code=200,
            response_body=b'{"choices": [{"text": "yo", "finish_reason": "stop"}]}',
        )
    )
    writer.close()
    parts.close()
    env = {
        "DRIFTLOOP__CAPTURE__DB_PATH": str(cfg.capture.db_path),
        "DRIFTLOOP__API__PORT": "9",
        "DRIFTLOOP__CACHE_DIR": str(cfg.cache_dir),
    }
    result = CliRunner().invoke(cli, ["requests", "--limit", "5"], env=env)
    assert result.exit_code == 0, result.output
    assert "(no service running)" in result.stderr
    [row] = [json.loads(line) for line in result.stdout.splitlines()]
    assert (row["prompt_text"], row["response_text"]) == ("hi", "yo")


def test_drift_report_reads_the_running_service_and_writes_html_and_png(tmp_path):
    with running_api(tmp_path) as api:
        env = {
            "DRIFTLOOP__API__PORT": api.url.rsplit(":", 1)[1],
            "DRIFTLOOP_API_TOKEN": api.token,
            "DRIFTLOOP__CACHE_DIR": str(tmp_path / "cli-cache"),
        }
        out = tmp_path / "reports"
        empty = CliRunner().invoke(cli, ["drift", "report", "--out", str(out)], env=env)
        assert empty.exit_code == 1 and "no drift evaluations yet" in empty.output
        assert f"running service API at {api.url}/api/v1/drift/latest" in empty.stderr
        assert api.parts.store is not None
        api.parts.store.execute(
            "INSERT INTO drift_runs (run_at, model_alias, signal, score, threshold, p_value,"
            " n_reference, n_current, drifted, reason) VALUES"
            " (now(), 'support', 'combined', 0.9, 0.5, 0.001, 100, 100, true, 'tripped')"
        )
        result = CliRunner().invoke(cli, ["drift", "report", "--out", str(out)], env=env)
    assert result.exit_code == 0, result.output
    assert "drifted: support/combined" in result.stdout
    assert (out / "drift-summary.png").read_bytes()[:4] == b"\x89PNG"
    assert "support" in (out / "drift-report.html").read_text()


def test_the_fleet_roles_name_the_keys_they_lack(tmp_path):
    path = tmp_path / "driftloop.toml"
    path.write_text("[vllm]\nlaunch = false\n")
    env = {"DRIFTLOOP_API_TOKEN": "t" * 32, "DRIFTLOOP_FLEET_TOKEN": "f" * 32}
    sidecar = CliRunner().invoke(cli, ["sidecar", "--config", str(path)], env=env)
    assert sidecar.exit_code == 1
    assert "fleet.sidecar_id, fleet.object_store_url, fleet.controller_url" in sidecar.output
    controller = CliRunner().invoke(cli, ["controller", "--config", str(path)], env=env)
    assert controller.exit_code == 1
    assert "`driftloop controller` needs fleet.object_store_url" in controller.output


def test_the_sidecar_refuses_to_start_without_the_fleet_token(tmp_path):
    path = tmp_path / "driftloop.toml"
    path.write_text(
        '[vllm]\nlaunch = false\n[fleet]\nsidecar_id = "r1"\nobject_store_url = "store"\n'
        'controller_url = "http://127.0.0.1:9"\n'
    )
    result = CliRunner().invoke(
        cli, ["sidecar", "--config", str(path)], env={"DRIFTLOOP_FLEET_TOKEN": ""}
    )
    assert result.exit_code == 1
    assert "DRIFTLOOP_FLEET_TOKEN must hold the fleet token" in result.output
