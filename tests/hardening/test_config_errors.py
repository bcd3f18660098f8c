"""Bad configuration through the real CLI: one clear line naming key and value, never a traceback.

``check-config`` runs through click's runner; ``serve`` runs as a real subprocess (vllm.launch
false), since its port and token checks happen before anything is started.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from driftloop.cli.main import cli
from driftloop.config import ConfigError, load_config
from driftloop.vllm_process import free_port

GOOD_TOKEN = "t0ken-for-tests-0123456789"


def check_config(env: dict[str, str], toml: bytes | None = None, tmp_path: Path | None = None):
    args = ["check-config"]
    if toml is not None:
        assert tmp_path is not None
        path = tmp_path / "c.toml"
        path.write_bytes(toml)
        args += ["--config", str(path)]
    return CliRunner().invoke(cli, args, env={"DRIFTLOOP_API_TOKEN": GOOD_TOKEN, **env})


def one_error_line(result: Result) -> str:
    """The run failed with exactly one line, click's ``Error: …``, and no traceback."""
    assert result.exit_code != 0, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    assert "Traceback" not in result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("Error: ")
    return lines[0]


def printed(result: Result) -> dict:
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


@pytest.mark.parametrize(
    ("env", "toml", "expected"),
    [
        pytest.param({}, b"[capture]\nsample_rate = 0.5 # caf\xe9\n", "byte 0xe9 at offset 33",
                     id="non-utf8-file"),
        pytest.param({"DRIFTLOOP__": "1"}, None, "environment variable DRIFTLOOP__: empty key",
                     id="empty-name"),
        pytest.param({"DRIFTLOOP__CAPTURE__": "1"}, None, "DRIFTLOOP__CAPTURE__: empty key",
                     id="trailing-separator"),
        pytest.param({"DRIFTLOOP__CAPTUR__SAMPLE_RATE": "1"}, None,
                     "DRIFTLOOP__CAPTUR__SAMPLE_RATE: unknown key 'captur'", id="unknown-section"),
        pytest.param({"DRIFTLOOP__CAPTURE__SAMPLE_RATE__X": "1"}, None,
                     "capture.sample_rate is a value, not a section", id="below-a-value"),
        pytest.param({"DRIFTLOOP__CAPTURE__SAMPLE_RATE": "lots"}, None,
                     "capture.sample_rate = 'lots' (from DRIFTLOOP__CAPTURE__SAMPLE_RATE)",
                     id="bad-env-value"),
        pytest.param({"DRIFTLOOP__API__PORT": "8100"}, None,
                     "api.port = 8100 is also sidecar.port", id="api-port-is-sidecar-port"),
        pytest.param({"DRIFTLOOP__VLLM__PORT": "8101"}, None,
                     "vllm.port = 8101 is also api.port", id="vllm-port-is-api-port"),
        pytest.param({"DRIFTLOOP__VLLM__LAUNCH": "false",
                      "DRIFTLOOP__SIDECAR__UPSTREAM_URL": "http://localhost:8100"}, None,
                     "sidecar.upstream_url = 'http://localhost:8100' is the sidecar itself",
                     id="upstream-is-the-sidecar"),
        pytest.param({"DRIFTLOOP__SIDECAR__HOST": "not a host"}, None,
                     "sidecar.host = 'not a host'", id="bad-sidecar-host"),
        pytest.param({"DRIFTLOOP__API__HOST": "127.0.0.1:8101"}, None,
                     "api.host = '127.0.0.1:8101'", id="host-with-port"),
        pytest.param({"DRIFTLOOP_API_TOKEN": "short"}, None,
                     "DRIFTLOOP_API_TOKEN: the control API token has 5 characters", id="short-token"),
        pytest.param({"DRIFTLOOP_API_TOKEN": "t\u00f6ken-long-enough-0123"}, None,
                     "DRIFTLOOP_API_TOKEN: the control API token must be printable ASCII",
                     id="non-ascii-token"),
        pytest.param({}, b"[capture]\nredact_patterns = ['(']\n",
                     "capture.redact_patterns = ['(']: redaction pattern '(' is not a valid regex",
                     id="bad-regex"),
    ],
)  # fmt: skip
def test_check_config_refuses_in_one_line(tmp_path, env, toml, expected):
    line = one_error_line(check_config(env, toml, tmp_path))
    assert expected in line


def test_a_config_file_that_cannot_be_read_is_named(tmp_path):
    # The CLI's --config refuses a folder itself (click); the loader names any unreadable file.
    with pytest.raises(
        ConfigError, match=f"^config file {tmp_path} cannot be read: Is a directory$"
    ):
        load_config(tmp_path, environ={})


def test_keys_of_dict_settings_keep_their_case_and_names_do_not_matter():
    cfg = printed(
        check_config(
            {
                "DRIFTLOOP__ALIASES__MyModel": "smollm2",
                "driftloop__aliases__x": "ignored: the prefix is upper case",
                "DRIFTLOOP__capture__Sample_Rates__MyModel": "0.25",
                "DRIFTLOOP__RETRAIN__GOLDEN_SETS__MyModel": "helpdesk@1",
                "DRIFTLOOP__JUDGES__RULES__regex": '{"pattern": "(?i)Sorry"}',
            }
        )
    )
    assert cfg["aliases"] == {"MyModel": "smollm2"}
    assert cfg["capture"]["sample_rates"] == {"MyModel": 0.25}
    assert cfg["retrain"]["golden_sets"]["MyModel"] == "helpdesk@1"
    assert cfg["judges"]["rules"]["regex"] == {"pattern": "(?i)Sorry"}


def test_string_keys_take_values_verbatim_and_others_parse_as_json():
    cfg = printed(
        check_config(
            {
                "DRIFTLOOP__VLLM__SERVED_MODEL_NAME": "123",
                "DRIFTLOOP__ALIASES__support": "true",
                "DRIFTLOOP__API__TOKEN_ENV": "null",
                "DRIFTLOOP__CAPTURE__DB_PATH": "42",
                "DRIFTLOOP__CAPTURE__SAMPLE_RATE": "0.5",
                "DRIFTLOOP__CAPTURE__ENABLED": "false",
                "DRIFTLOOP__RETRAIN__QUALITY_BAR": "null",
                "DRIFTLOOP__VLLM__MODEL_DIR": "",
                "DRIFTLOOP__CAPTURE__REDACT_PATTERNS": '["(?i)x-\\\\d+"]',
                "DRIFTLOOP__DRIFT__EMBEDDING_BACKEND": "onnx-int8",
            }
        )
    )
    assert cfg["vllm"]["served_model_name"] == "123"
    assert cfg["aliases"] == {"support": "true"}
    assert cfg["api"]["token_env"] == "null"
    assert cfg["capture"]["db_path"] == "42"
    assert (cfg["capture"]["sample_rate"], cfg["capture"]["enabled"]) == (0.5, False)
    assert cfg["retrain"]["quality_bar"] is None and cfg["vllm"]["model_dir"] is None
    assert cfg["capture"]["redact_patterns"] == ["(?i)x-\\d+"]
    assert cfg["drift"]["embedding_backend"] == "onnx-int8"


def test_ports_may_repeat_when_vllm_is_not_launched_or_a_port_is_zero():
    printed(check_config({"DRIFTLOOP__VLLM__LAUNCH": "false", "DRIFTLOOP__VLLM__PORT": "8100"}))
    printed(check_config({"DRIFTLOOP__SIDECAR__PORT": "0", "DRIFTLOOP__API__PORT": "0"}))


# --- serve, as a real subprocess ------------------------------------------------------------


def serve(tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """``driftloop serve`` in a child process; every case here must end before starting."""
    base = {
        "DRIFTLOOP_API_TOKEN": GOOD_TOKEN,
        "DRIFTLOOP__VLLM__LAUNCH": "false",
        "DRIFTLOOP__SIDECAR__UPSTREAM_URL": "http://127.0.0.1:9",
        "DRIFTLOOP__SIDECAR__PORT": str(free_port()),
        "DRIFTLOOP__API__PORT": str(free_port()),
        "DRIFTLOOP__CAPTURE__DB_PATH": str(tmp_path / "capture.duckdb"),
        "DRIFTLOOP__CACHE_DIR": str(tmp_path / "cache"),
        "DRIFTLOOP__DRIFT__ENABLED": "false",
        "DRIFTLOOP__JUDGES__ENABLED": "false",
    }
    environ = {k: v for k, v in os.environ.items() if not k.startswith("DRIFTLOOP")}
    return subprocess.run(
        [sys.executable, "-m", "driftloop", "serve"],
        env={**environ, **base, **env},
        capture_output=True,
        text=True,
        timeout=120,  # a safety net: each case exits before any server starts
    )


def serve_error_line(done: subprocess.CompletedProcess[str]) -> str:
    assert done.returncode != 0, done.stderr
    assert "Traceback" not in done.stderr + done.stdout, done.stderr
    lines = (done.stdout + done.stderr).strip().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("Error: ")
    return lines[0]


@pytest.fixture
def busy_port() -> Iterator[int]:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        yield listener.getsockname()[1]


@pytest.mark.parametrize("section", ["sidecar", "api"])
def test_serve_names_a_busy_port(tmp_path, busy_port, section):
    done = serve(tmp_path, **{f"DRIFTLOOP__{section.upper()}__PORT": str(busy_port)})
    line = serve_error_line(done)
    assert f"{section}.port = {busy_port} is already in use on 127.0.0.1" in line


def test_serve_names_a_host_that_is_not_this_machine(tmp_path):
    # 192.0.2.0/24 is TEST-NET-1: valid syntax, never an address of this machine.
    line = serve_error_line(serve(tmp_path, DRIFTLOOP__API__HOST="192.0.2.1"))
    assert "api.host = '192.0.2.1' is not an address of this machine" in line


@pytest.mark.parametrize(
    ("token", "expected"),
    [
        ("short", "has 5 characters; at least 16 are needed"),
        (
            "with space inside 0123",
            "must be printable ASCII without spaces; character 5 of 22 is ' '",
        ),
        ("\u00fcnicode-token-0123456789", "must be printable ASCII"),
    ],
)
def test_serve_refuses_a_bad_token_in_one_line(tmp_path, token, expected):
    line = serve_error_line(serve(tmp_path, DRIFTLOOP_API_TOKEN=token))
    assert f"DRIFTLOOP_API_TOKEN: the control API token {expected}" in line
    assert token not in line  # the token itself is not echoed


def test_serve_refuses_a_mangled_token_file(tmp_path):
    (tmp_path / "cache").mkdir()
    (tmp_path / "cache" / "api-token").write_bytes(b"\xff\xfe-not-a-token-at-all")
    environ = {"DRIFTLOOP_API_TOKEN": ""}  # empty: the file is used
    line = serve_error_line(serve(tmp_path, **environ))
    assert "api-token: the control API token must be printable ASCII" in line


def test_serve_refuses_a_port_clash_check_config_also_sees(tmp_path):
    done = serve(
        tmp_path,
        DRIFTLOOP__SIDECAR__PORT="18123",
        DRIFTLOOP__API__PORT="18123",
    )
    assert "api.port = 18123 is also sidecar.port" in serve_error_line(done)
