"""A fleet sidecar's copy of the controller's routing table, kept current by polling.

The sidecar starts with the last table it applied (kept in ``state_path``, so a sidecar restarted
while the controller is down still routes as the fleet does), or with the aliases from its
config when it never applied one. It applies each new table atomically (``AliasTable.replace``)
and keeps the last one whenever the controller is unreachable, so traffic never waits on the
controller.
Each poll says which version the sidecar applies (the controller exports it per sidecar).
The table also names the adapter versions the controller wants loaded (``adapters``); the
follower hands them to the adapter agent (``on_wanted``) and posts the agent's reports back.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
from prometheus_client import CollectorRegistry, Counter, Gauge

from monitor.adapter_bundles import BundleError, BundleRef
from monitor.aliases import AliasTable, Canary
from monitor.fs import write_atomic

log = logging.getLogger(__name__)

ROUTING_PATH = "/api/v1/fleet/routing"
REPORT_PATH = "/api/v1/fleet/adapters"


def routing_table(body: Any) -> tuple[int, dict[str, str]]:
    """The version and aliases of a routing table (the controller's answer or the saved copy).

    ``ValueError``, ``KeyError`` or ``TypeError`` when it is not one.
    """
    version, table = int(body["version"]), dict(body["aliases"])
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in table.items()):
        raise ValueError("the routing table maps names to names")
    return version, table


def running_canaries(body: Any) -> dict[str, Canary]:
    """The canaries a routing table runs (none in a table from before them).

    ``ValueError``, ``KeyError`` or ``TypeError`` when one is malformed.
    """
    canaries = body.get("canaries") or {}
    if not isinstance(canaries, dict):
        raise ValueError("the routing table's canaries map aliases to a candidate and a share")
    return {
        str(alias): Canary(str(c["served_model"]), float(c["share"]))
        for alias, c in canaries.items()
    }


def wanted_adapters(body: Any) -> dict[str, BundleRef]:
    """The adapter versions a routing table wants loaded (none in a table from before them).

    ``BundleError`` names a malformed reference.
    """
    wanted = body.get("adapters") or {}
    if not isinstance(wanted, dict):
        raise BundleError("the routing table's adapters map names to bundle references")
    return {str(name): BundleRef.parse(ref) for name, ref in wanted.items()}


class RoutingMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.version = Gauge(
            "driftloop_routing_applied_version",
            "Version of the controller's routing table this sidecar applies (0: its config's).",
            registry=registry,
        )
        self.polls = Counter(
            "driftloop_routing_polls_total",
            "Routing table polls by outcome: changed | unchanged | failed.",
            ["outcome"],
            registry=registry,
        )


class RoutingFollower:
    """Polls ``controller_url`` every ``interval_s`` and applies what changed to ``aliases``."""

    def __init__(
        self,
        aliases: AliasTable,
        controller_url: str,
        token: str,
        sidecar_id: str,
        metrics: RoutingMetrics,
        *,
        interval_s: float = 2.0,
        timeout_s: float = 5.0,
        state_path: Path | None = None,
        on_wanted: Callable[[dict[str, BundleRef]], None] | None = None,
    ) -> None:
        self.aliases, self.sidecar_id, self._metrics = aliases, sidecar_id, metrics
        self._interval_s = interval_s
        self._client = httpx.Client(
            base_url=controller_url.rstrip("/"),
            headers={"authorization": f"Bearer {token}"},
            timeout=timeout_s,
            trust_env=False,  # a proxy from the environment must not see the fleet token
        )
        self.applied: int | None = None  # the controller's version; None: still the config's
        self._etag: str | None = None
        self._state_path = state_path
        self._on_wanted = on_wanted
        self.wanted: dict[str, BundleRef] = {}
        self.problem: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        metrics.version.set_function(lambda: self.applied or 0)
        self._load_state()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="routing-follower", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)
        self._client.close()

    def poll(self) -> bool:
        """One fetch; True when a new table was applied."""
        params: dict[str, Any] = {"sidecar": self.sidecar_id}
        headers = {}
        if self.applied is not None:
            params["version"] = self.applied
        if self._etag is not None:
            headers["if-none-match"] = self._etag
        try:
            response = self._client.get(ROUTING_PATH, params=params, headers=headers)
            if response.status_code == 304:
                self._ok()
                self._metrics.polls.labels(outcome="unchanged").inc()
                return False
            response.raise_for_status()
            body = response.json()
            version, table = routing_table(body)
            canaries, wanted = running_canaries(body), wanted_adapters(body)
        except (httpx.HTTPError, ValueError, KeyError, TypeError, BundleError) as exc:
            self._failed(f"{type(exc).__name__}: {exc}")
            return False
        self._apply(version, table, canaries, wanted, response.headers.get("etag"))
        self._save_state(table)
        self._ok()
        self._metrics.polls.labels(outcome="changed").inc()
        return True

    def report(self, body: dict[str, Any]) -> None:
        """Post the adapter agent's report; a controller that is down just misses this one."""
        try:
            response = self._client.post(REPORT_PATH, json={"sidecar": self.sidecar_id, **body})
            response.raise_for_status()
        except httpx.HTTPError as exc:
            log.debug("adapter report not delivered: %s", exc)

    def _apply(
        self,
        version: int,
        table: dict[str, str],
        canaries: dict[str, Canary],
        wanted: dict[str, BundleRef],
        etag: str | None,
    ) -> None:
        self.aliases.replace(table, version, canaries)
        if self.applied != version:
            log.info("routing table version %d applied: %s", version, table)
        self.applied, self._etag, self.wanted = version, etag, wanted
        if self._on_wanted is not None:
            self._on_wanted(wanted)

    def _load_state(self) -> None:
        if self._state_path is None or not self._state_path.exists():
            return
        try:
            state = json.loads(self._state_path.read_bytes())
            version, table = routing_table(state)
            canaries, wanted = running_canaries(state), wanted_adapters(state)
            etag = state["etag"]
        except (OSError, ValueError, KeyError, TypeError, BundleError) as exc:
            log.warning("ignoring the saved routing table %s: %s", self._state_path, exc)
            return
        self._apply(version, table, canaries, wanted, etag if isinstance(etag, str) else None)

    def _save_state(self, table: dict[str, str]) -> None:
        if self._state_path is None:
            return
        state = {
            "version": self.applied,
            "aliases": table,
            "canaries": {a: c.as_dict() for a, c in self.aliases.canaries().items()},
            "adapters": {name: ref.as_dict() for name, ref in self.wanted.items()},
            "etag": self._etag,
        }
        try:
            self._state_path.parent.mkdir(parents=True, exist_ok=True)
            write_atomic(self._state_path, json.dumps(state).encode())
        except OSError as exc:  # routing still works; only a restart would start from config
            log.warning("cannot save the routing table to %s: %s", self._state_path, exc)

    def health(self) -> dict[str, Any]:
        return {"routing_version": self.applied, "routing_problem": self.problem}

    def _ok(self) -> None:
        if self.problem is not None:
            log.warning("controller reachable again (was: %s)", self.problem)
        self.problem = None

    def _failed(self, message: str) -> None:
        if self.problem != message:
            log.error("routing poll failed, keeping version %s: %s", self.applied, message)
        self.problem = message
        self._metrics.polls.labels(outcome="failed").inc()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.poll()
            self._stop.wait(self._interval_s)
