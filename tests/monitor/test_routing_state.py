"""A sidecar's saved routing table: used when it restarts, ignored (with a warning) when damaged."""

from __future__ import annotations

import json
import socket

from prometheus_client import CollectorRegistry

from monitor.aliases import AliasTable
from monitor.routing import RoutingFollower, RoutingMetrics


def unreachable_controller() -> str:
    with socket.socket() as sock:  # a port nothing listens on once it is closed
        sock.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{sock.getsockname()[1]}"


def follower(state_path) -> RoutingFollower:
    aliases = AliasTable({"support": "smollm2"})
    metrics = RoutingMetrics(CollectorRegistry())
    return RoutingFollower(
        aliases, unreachable_controller(), "t", "replica-1", metrics, state_path=state_path
    )


def test_a_restarted_sidecar_routes_by_its_saved_table_while_the_controller_is_down(tmp_path):
    state = tmp_path / "routing.json"
    state.write_text(json.dumps({"version": 7, "aliases": {"support": "v2"}, "etag": '"7-ab"'}))
    routing = follower(state)
    assert routing.poll() is False and routing.problem  # the controller is unreachable
    assert (routing.applied, routing.aliases.resolve("support")) == (7, "v2")


def test_a_damaged_saved_table_is_ignored_and_the_config_aliases_serve(tmp_path, caplog):
    state = tmp_path / "routing.json"
    for damaged in ("{not json", json.dumps({"version": 3, "aliases": {"support": 5}})):
        state.write_text(damaged)
        routing = follower(state)
        assert (routing.applied, routing.aliases.resolve("support")) == (None, "smollm2")
    assert "ignoring the saved routing table" in caplog.text
