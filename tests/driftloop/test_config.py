"""Config loading: defaults, TOML, env overrides, and errors that name key and value."""

from pathlib import Path

import pytest

from driftloop.config import ConfigError, documented_keys, load_config


def test_defaults_are_valid():
    cfg = load_config(None, environ={})
    assert cfg.sidecar.host == "127.0.0.1"
    assert cfg.api.host == "127.0.0.1"


def test_toml_then_env_override(tmp_path: Path):
    path = tmp_path / "c.toml"
    path.write_text('[capture]\nsample_rate = 0.25\n[aliases]\nsupport = "smollm2"\n')
    cfg = load_config(
        path,
        environ={
            "DRIFTLOOP__CAPTURE__BATCH_SIZE": "64",
            "DRIFTLOOP__SIDECAR__UPSTREAM_URL": "http://h:1/",
        },
    )
    assert cfg.capture.sample_rate == 0.25
    assert cfg.capture.batch_size == 64
    assert cfg.sidecar.upstream_url == "http://h:1"
    assert cfg.aliases == {"support": "smollm2"}


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        ("[capture]\nsample_rate = 1.5\n", "capture.sample_rate = 1.5"),
        ("[capture]\nsample_rates = { a = 2.0 }\n", "rate for 'a' is 2.0"),
        ('[sidecar]\nupstream_url = "ftp://x"\n', "sidecar.upstream_url = 'ftp://x'"),
        ("[sidecar]\nprot = 1\n", "sidecar.prot: unknown key"),
        ("[capture\n", "not valid TOML"),
    ],
)
def test_errors_name_key_and_value(tmp_path: Path, toml: str, message: str):
    path = tmp_path / "c.toml"
    path.write_text(toml)
    with pytest.raises(ConfigError, match=".*" + __import__("re").escape(message)):
        load_config(path, environ={})


def test_env_override_error_names_key():
    with pytest.raises(ConfigError, match=r"capture.queue_size = 'lots'"):
        load_config(None, environ={"DRIFTLOOP__CAPTURE__QUEUE_SIZE": "lots"})


def test_missing_file_is_named(tmp_path: Path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.toml", environ={})


def test_every_key_is_documented():
    keys = documented_keys()
    assert "capture.flush_interval_s" in keys
    assert all(description for description in keys.values()), [k for k, v in keys.items() if not v]


def test_each_problem_is_one_line_naming_key_value_and_variable(tmp_path: Path):
    path = tmp_path / "c.toml"
    path.write_text("[capture]\nredact_patterns = ['ok', '(']\nbatch_size = 0\n")
    with pytest.raises(ConfigError) as caught:
        load_config(path, environ={"DRIFTLOOP__API__PORT": "-1"})
    lines = str(caught.value).splitlines()
    assert len(lines) == 3, lines
    assert all(line.startswith(f"invalid configuration in {path}: ") for line in lines)
    assert any("capture.batch_size = 0: " in line for line in lines)
    assert any("redaction pattern '(' is not a valid regex" in line for line in lines)
    assert any("api.port = -1 (from DRIFTLOOP__API__PORT): " in line for line in lines)


def test_env_keys_of_dicts_keep_case_and_merge_with_the_file(tmp_path: Path):
    path = tmp_path / "c.toml"
    path.write_text('[aliases]\nsupport = "smollm2"\n')
    cfg = load_config(path, environ={"DRIFTLOOP__ALIASES__MyModel": "smollm2"})
    assert cfg.aliases == {"support": "smollm2", "MyModel": "smollm2"}


def test_a_utf8_bom_is_tolerated(tmp_path: Path):
    path = tmp_path / "c.toml"
    path.write_bytes(b"\xef\xbb\xbf[capture]\nsample_rate = 0.5\n")
    assert load_config(path, environ={}).capture.sample_rate == 0.5
