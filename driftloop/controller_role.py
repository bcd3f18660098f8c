"""`driftloop controller`: one per fleet; ingests every sidecar's shards and evaluates drift on them.

It owns the DuckDB file. Shards are listed and loaded on ``fleet.ingest_interval_s``; embeddings,
drift and the judges then run per alias over the whole fleet's traffic, as in `driftloop serve`
(an LLM judge calls ``judges.base_url``, else ``sidecar.upstream_url``: a replica or the load
balancer in front of them). With ``retrain.enabled`` the retrain loop runs here too: it trains
locally, gates a candidate on the evaluation replica (``fleet.eval_sidecar``, whose vLLM is
``sidecar.upstream_url``), and ships through every sidecar's adapter agent: the route switches
only once every live replica reports the version loaded (``retrain.serving.fleet``). The control
API serves the routing table that sidecars follow (``fleet_routes``); its changes are logged in
DuckDB and restored at start (``routing_log``). Its own metrics listen on
``sidecar.host:sidecar.port`` (a controller has no proxy there).
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, start_http_server

from driftloop.api.app import create_api
from driftloop.api.fleet_routes import FleetMembers, fleet_router
from driftloop.api.guard import ApiGuard
from driftloop.api.judge_routes import judge_router
from driftloop.api.loop_routes import loop_router
from driftloop.api.routing_log import RoutingLog
from driftloop.api.server import ApiServer, ApiServerError
from driftloop.config import Config, ConfigError, check_role
from driftloop.judges_wiring import judge_jobs
from driftloop.proxy_wiring import alias_table, redactor
from driftloop.retrain_wiring import FleetDeployment, RetrainParts
from driftloop.scheduling import Job, Jobs
from driftloop.service import (
    api_token,
    build_retrain_loop,
    drift_jobs,
    open_database,
    reconcile_deployments,
)
from driftloop.sidecar_role import open_object_store
from driftloop.upstream import upstream_api_key
from monitor.embedding_job import EmbeddingWorker
from monitor.fleet_metrics import IngestMetrics
from monitor.ingest import ShardIngest
from monitor.store import Store
from monitor.urls import redact_url
from retrain.adapter_registry import AdapterRegistry
from retrain.control import LoopControl
from retrain.serving.fleet import FleetPlacement, ReplicaReports

log = logging.getLogger(__name__)


@dataclass
class Controller:
    store: Store
    routing: RoutingLog
    ingest: ShardIngest
    members: FleetMembers
    metrics: IngestMetrics
    registry: CollectorRegistry
    jobs: Jobs
    replicas: ReplicaReports
    embedder: EmbeddingWorker | None = None
    retrain: RetrainParts | None = None
    placement: FleetPlacement | None = None
    stopped: threading.Event = field(default_factory=threading.Event)

    def close(self) -> None:
        self.jobs.stop()
        if self.embedder is not None:
            self.embedder.close()
        if self.retrain is not None:
            self.retrain.close()
        self.store.close()


def build_controller(cfg: Config, registry: CollectorRegistry | None = None) -> Controller:
    check_role(cfg, "controller")
    registry = registry or CollectorRegistry()
    store = open_database(cfg)
    aliases = alias_table(cfg)
    routing = RoutingLog(store, aliases)
    routing.restore()
    metrics = IngestMetrics(registry)
    objects = open_object_store(cfg)
    ingest = ShardIngest(store, objects, metrics)
    jobs = Jobs([Job("ingest", ingest.run, cfg.fleet.ingest_interval_s)])
    replicas = ReplicaReports(cfg.fleet.live_after_s)
    parts = Controller(
        store, routing, ingest, FleetMembers(metrics), metrics, registry, jobs, replicas
    )
    upstream, key = cfg.sidecar.upstream_url, upstream_api_key(cfg)
    if cfg.drift.enabled:
        parts.embedder, drift = drift_jobs(cfg, store, registry, aliases)
        jobs.add(*drift.jobs)
    if cfg.judges.enabled:
        jobs.add(*judge_jobs(cfg, store, registry, aliases, upstream, key))
    if cfg.retrain.enabled and cfg.aliases:
        if not cfg.fleet.eval_sidecar:
            raise ConfigError(
                "the controller's retrain loop needs fleet.eval_sidecar: the sidecar whose vLLM"
                " (sidecar.upstream_url) serves the gate's candidates"
            )
        parts.placement = FleetPlacement(
            store, objects, AdapterRegistry(store), replicas, timeout_s=cfg.fleet.rollout_timeout_s
        )
        fleet = FleetDeployment(parts.placement, routing, cfg.fleet.eval_sidecar)
        parts.retrain = build_retrain_loop(cfg, store, registry, aliases, upstream, key, fleet)
        jobs.add(Job("retrain", parts.retrain.loop.tick, cfg.retrain.interval_s))
    return parts


def controller_api(cfg: Config, parts: Controller) -> ApiGuard:
    placement = parts.placement
    routers = [
        fleet_router(
            parts.routing,
            parts.members,
            parts.metrics,
            parts.replicas,
            placement.wanted if placement is not None else lambda sidecar: {},
        )
    ]
    if parts.retrain is not None:
        control = LoopControl(parts.retrain.loop)
        routers.append(loop_router(control, lambda: set(cfg.aliases), redactor(cfg)))
        routers.append(judge_router(parts.retrain.calibrator))
    return create_api(
        api_token(cfg),
        parts.store,
        None,
        parts.routing.aliases,
        routers,
        registry=parts.registry,
        fleet_token=os.environ.get(cfg.fleet.token_env) or None,
        unauthenticated_rate_per_s=cfg.api.unauthenticated_rate_per_s,
        unauthenticated_burst=cfg.api.unauthenticated_burst,
    )


def run_controller(cfg: Config) -> None:
    """Run until SIGINT/SIGTERM: ingest, embeddings and drift on a schedule, the control API."""
    api_token(cfg)
    parts = build_controller(cfg)
    api = ApiServer(controller_api(cfg, parts), cfg.api.host, cfg.api.port)
    start_http_server(cfg.sidecar.port, cfg.sidecar.host, registry=parts.registry)
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: parts.stopped.set())
    log.info(
        "controller: shards from %s into %s; control API on http://%s:%d; metrics on :%d",
        redact_url(cfg.fleet.object_store_url),
        cfg.capture.db_path,
        cfg.api.host,
        cfg.api.port,
        cfg.sidecar.port,
    )
    # Before the API serves the routing table: a running canary is routed again first.
    reconcile_deployments(parts.retrain)
    try:
        try:
            api.start()
        except ApiServerError as exc:
            raise SystemExit(str(exc)) from None
        parts.jobs.start()
        parts.stopped.wait()
    finally:
        api.stop()
        parts.close()
