"""What each role needs and imports: one config file for all three, each checking its own keys."""

from __future__ import annotations

import subprocess
import sys

import pytest

from driftloop.config import ConfigError, check_role, load_config


def test_the_sidecar_role_imports_none_of_the_loops_packages():
    code = (
        "import sys, driftloop.sidecar_role, driftloop.cli.main;"
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'retrain', 'judges'}))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_each_role_names_the_fleet_keys_it_lacks():
    cfg = load_config(None)
    check_role(cfg, "serve")  # the one-box default needs none
    with pytest.raises(
        ConfigError, match=r"fleet.sidecar_id, fleet.object_store_url, fleet.controller_url"
    ):
        check_role(cfg, "sidecar")
    with pytest.raises(ConfigError, match=r"`driftloop controller` needs fleet.object_store_url"):
        check_role(cfg, "controller")


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("SIDECAR_ID", "../etc", "sidecar_id"),
        ("OBJECT_STORE_URL", "http://bucket", "object_store_url"),
    ],
)
def test_bad_fleet_values_are_refused_naming_the_key(key, value, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, environ={f"DRIFTLOOP__FLEET__{key}": value})
