"""The retrain loop's CLI commands, through click's runner, against a real control API.

The API runs in-process on 127.0.0.1 as ``serve`` runs it (loop routes mounted, no vLLM behind
it), so each command is checked end to end: its request, the API's answer, what it prints.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from click.testing import CliRunner, Result

from driftloop.cli.main import cli
from retrain.adapter_registry import AdapterRegistry, Status
from retrain.switches import is_paused
from tests.hardening.api_running import RunningApi, running_api

ADAPTER = "ab12cd34ef567890"


@dataclass
class Cli:
    api: RunningApi
    env: dict[str, str]

    def run(self, *args: str) -> Result:
        return CliRunner().invoke(cli, list(args), env=self.env)

    def json(self, *args: str) -> Any:
        result = self.run(*args)
        assert result.exit_code == 0, result.output
        return json.loads(result.stdout)

    def audit(self) -> list[tuple[str, str]]:
        return [(row["method"], row["path"]) for row in self.api.audit()]


@pytest.fixture
def loop_cli(tmp_path) -> Iterator[Cli]:
    with running_api(tmp_path) as api:
        port = api.url.rsplit(":", 1)[1]
        env = {
            "DRIFTLOOP__API__HOST": "127.0.0.1",
            "DRIFTLOOP__API__PORT": port,
            "DRIFTLOOP_API_TOKEN": api.token,
            "DRIFTLOOP__CACHE_DIR": str(tmp_path / "cli-cache"),
        }
        yield Cli(api, env)


def staged_adapter(api: RunningApi) -> None:
    """An adapter that passed its gate, as the loop leaves it (no weights needed to list it)."""
    assert api.parts.store is not None
    registry = AdapterRegistry(api.parts.store)
    registry.register("support", ADAPTER, "/adapters/x", dataset_id=None, run_id=None)
    for status in (Status.EVALUATING, Status.STAGING):
        registry.transition(ADAPTER, status, actor="loop", reason="test")


def test_feedback_is_stored_and_the_reads_list_runs_and_decisions(loop_cli):
    stored = loop_cli.json(
        "feedback", "--model", "support", "--prompt", "My disk is full.", "--answer", "Clean it."
    )
    assert stored["model"] == "support" and stored["id"]
    assert loop_cli.api.rows("SELECT prompt, answer FROM feedback") == [
        ("My disk is full.", "Clean it.")
    ]
    assert loop_cli.json("retrain", "runs", "--model", "support", "--limit", "5") == []
    assert loop_cli.json("retrain", "runs") == []
    assert loop_cli.json("retrain", "decisions", "--model", "support") == []


def test_dry_run_pause_and_resume(loop_cli):
    decided = loop_cli.json("retrain", "dry-run", "--model", "support")
    assert decided["model"] == "support" and decided["decision"]
    paused = loop_cli.json("retrain", "pause", "--model", "support", "--reason", "maintenance")
    assert paused["paused"] is True
    assert is_paused(loop_cli.api.parts.store, "support")
    resumed = loop_cli.json("retrain", "resume", "--model", "support", "--reason", "done")
    assert resumed["paused"] is False and not is_paused(loop_cli.api.parts.store, "support")
    assert ("POST", "/api/v1/models/support/pause") in loop_cli.audit()


def test_a_refused_retrain_names_the_url_the_status_and_the_reason(loop_cli):
    result = loop_cli.run("retrain", "now", "--model", "support", "--reason", "try")
    assert result.exit_code == 1
    assert f"POST {loop_cli.api.url}/api/v1/retrain -> 409" in result.output
    assert "need 20" in result.output  # the data floor: no training examples yet
    refused = loop_cli.run("retrain", "rollback", "--model", "support", "--reason", "undo")
    assert refused.exit_code == 1 and "/api/v1/models/support/rollback -> 409" in refused.output


def test_adapters_list_show_veto_promote_and_pin(loop_cli):
    assert loop_cli.json("adapters", "list") == []
    staged_adapter(loop_cli.api)
    [listed] = loop_cli.json("adapters", "list", "--model", "support")
    assert (listed["id"], listed["status"]) == (ADAPTER, "staging")
    lineage = loop_cli.json("adapters", "show", ADAPTER)
    assert lineage["adapter"]["served_name"] == "support-v1"
    vetoed = loop_cli.json("adapters", "veto", ADAPTER, "--reason", "looks wrong")
    assert vetoed["status"] == "rejected"
    # Promoting and pinning deploy into vLLM, which is not running here: the API's error is shown.
    promoted = loop_cli.run("adapters", "promote", ADAPTER, "--reason", "ship it")
    assert promoted.exit_code == 1
    assert f"/api/v1/adapters/{ADAPTER}/promote -> " in promoted.output
    pinned = loop_cli.run(
        "retrain", "pin", "--model", "support", "--reason", "r", "--adapter", ADAPTER
    )
    assert pinned.exit_code == 1 and "/api/v1/models/support/pin -> " in pinned.output
    unpinned = loop_cli.json("retrain", "pin", "--model", "support", "--reason", "unpin")
    assert unpinned == {"model": "support", "pinned": None}


def test_a_missing_service_is_named_with_its_url(tmp_path):
    env = {"DRIFTLOOP__API__PORT": "9", "DRIFTLOOP_API_TOKEN": "t" * 32}
    result = CliRunner().invoke(cli, ["adapters", "list"], env=env)
    assert result.exit_code == 1
    assert "no driftloop service answers at http://127.0.0.1:9/api/v1/adapters" in result.output
    assert "start `driftloop serve`" in result.output


def test_a_wrong_token_is_a_401_naming_the_url(loop_cli):
    result = CliRunner().invoke(
        cli, ["retrain", "runs"], env={**loop_cli.env, "DRIFTLOOP_API_TOKEN": "w" * 32}
    )
    assert result.exit_code == 1
    assert f"GET {loop_cli.api.url}/api/v1/retrain/runs -> 401" in result.output
