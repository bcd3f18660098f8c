"""The control API's fleet routes: the routing table sidecars fetch, and who fetched it.

Sidecars poll ``GET /api/v1/fleet/routing`` with the fleet token (it may read this route and
nothing else) and ``If-None-Match``: an unchanged table costs a 304. Each poll names the sidecar
and the version it applies, so the controller knows who is live and who lags. Operators change
an alias with ``PUT /api/v1/routing/{alias}`` (logged in DuckDB, so a restarted controller
serves the same table at the same version); every sidecar applies it on its next poll.
The table also carries the running canaries (``canaries``: alias -> candidate and share, split
by the sidecars) and the adapter versions that sidecar's agent must hold (``adapters``); each
agent posts what its vLLM holds to ``POST /api/v1/fleet/adapters`` (the rollout waits on these
reports, ``retrain.serving.fleet``).
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
import time
from collections.abc import Callable
from typing import Annotated, Any

from fastapi import APIRouter, Header, HTTPException, Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from driftloop.api.routing_log import RoutingLog
from monitor.fleet_metrics import IngestMetrics
from retrain.serving.fleet import ReplicaReports

SIDECAR_ID = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
MAX_SIDECARS = 1000  # bounds the per-sidecar metric series and this table


class Route(BaseModel):
    model_config = ConfigDict(extra="forbid")
    served_model: str = Field(min_length=1, max_length=200)
    reason: str = Field(min_length=1, max_length=500)


class AdapterReport(BaseModel):
    """What one sidecar's vLLM holds (served name -> digest) and what it could not load."""

    model_config = ConfigDict(extra="forbid")
    sidecar: str = Field(pattern=SIDECAR_ID)
    loaded: dict[Annotated[str, Field(max_length=200)], Annotated[str, Field(max_length=64)]] = (
        Field(default_factory=dict, max_length=256)
    )
    failed: dict[Annotated[str, Field(max_length=200)], Annotated[str, Field(max_length=500)]] = (
        Field(default_factory=dict, max_length=256)
    )
    problem: str | None = Field(None, max_length=2000)


class FleetMembers:
    """The sidecars that polled, with when and which routing version they apply."""

    def __init__(self, metrics: IngestMetrics) -> None:
        self._metrics = metrics
        self._lock = threading.Lock()
        self._seen: dict[str, dict[str, Any]] = {}

    def saw(self, sidecar: str, version: int | None) -> None:
        with self._lock:
            if sidecar not in self._seen and len(self._seen) >= MAX_SIDECARS:
                return
            self._seen[sidecar] = {"last_seen": time.time(), "version": version}
        self._metrics.sidecar_last_seen.labels(sidecar=sidecar).set_to_current_time()
        if version is not None:
            self._metrics.sidecar_routing_version.labels(sidecar=sidecar).set(version)

    def snapshot(self) -> dict[str, dict[str, Any]]:
        with self._lock:
            return {k: dict(v) for k, v in self._seen.items()}


def table_etag(version: int, table: dict[str, Any]) -> str:
    """The version and a digest of the content: a config edit across a restart is a new table."""
    digest = hashlib.blake2b(json.dumps(table, sort_keys=True).encode(), digest_size=6).hexdigest()
    return f'"{version}-{digest}"'


def fleet_router(
    routing_log: RoutingLog,
    members: FleetMembers,
    metrics: IngestMetrics,
    replicas: ReplicaReports,
    wanted: Callable[[str], dict[str, dict[str, str]]] = lambda sidecar: {},
) -> APIRouter:
    router = APIRouter()
    aliases = routing_log.aliases
    metrics.routing_version.set_function(lambda: aliases.version)

    @router.get("/api/v1/fleet/routing")
    def routing(
        response: Response,
        sidecar: Annotated[str, Query(pattern=SIDECAR_ID)],
        version: Annotated[int | None, Query(ge=0)] = None,
        if_none_match: Annotated[str | None, Header()] = None,
    ) -> Any:
        """The alias table, its version and the sidecar's wanted adapters; 304 when unchanged."""
        members.saw(sidecar, version)
        current, table, running = aliases.versioned()
        body = {
            "aliases": table,
            "canaries": {alias: canary.as_dict() for alias, canary in running.items()},
            "adapters": wanted(sidecar),
        }
        etag = table_etag(current, body)
        if if_none_match == etag:
            return Response(status_code=304, headers={"etag": etag})
        response.headers["etag"] = etag
        return {"version": current, **body}

    @router.post("/api/v1/fleet/adapters", status_code=204)
    def report(body: AdapterReport) -> Response:
        """A sidecar's adapter agent says what its vLLM holds; rollouts wait on these."""
        replicas.add(body.sidecar, body.loaded, body.failed, body.problem)
        return Response(status_code=204)

    @router.get("/api/v1/fleet/sidecars")
    def sidecars() -> dict[str, Any]:
        """Every sidecar that polled (when, which version) and what its adapter agent reported."""
        return {
            "routing_version": aliases.version,
            "sidecars": members.snapshot(),
            "adapters": replicas.snapshot(),
        }

    @router.put("/api/v1/routing/{alias}")
    def set_route(alias: str, body: Route, request: Request) -> dict[str, Any]:
        """Route a configured alias to a known served model; sidecars follow on their next poll."""
        request.state.audit = {
            "model": alias,
            "served_model": body.served_model,
            "reason": body.reason,
        }
        if alias not in aliases.snapshot():
            raise HTTPException(404, f"unknown alias {alias!r}: configure it under [aliases]")
        if body.served_model not in aliases.known() or not re.fullmatch(
            r"[\w.:/-]+", body.served_model
        ):
            raise HTTPException(422, f"unknown served model {body.served_model!r}")
        version = routing_log.route(alias, body.served_model, body.reason)
        return {"model": alias, "served_model": body.served_model, "version": version}

    return router
