"""`driftloop sidecar`: the proxy in front of one vLLM replica, capturing into shards.

No DuckDB, and none of the loop's packages (``retrain``, ``judges``) is imported: the sidecar
copies traffic, seals it into Parquet shards that the uploader sends to object storage (spooled
locally while that is down), and follows the controller's routing table. It serves with its last
table when the controller is unreachable, and with its config's aliases before the first answer.
Its adapter agent (``fleet.adapter_agent``) makes the vLLM beside it hold the adapter versions
that table wants, and reports what it holds.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

import uvloop
from prometheus_client import CollectorRegistry

from driftloop.config import Config, ConfigError, check_role
from driftloop.proxy_wiring import (
    Server,
    alias_table,
    build_proxy,
    capture_writer_options,
    exit_on_sigterm,
    run_servers,
    uvicorn_config,
)
from driftloop.upstream import open_upstream
from monitor.adapter_agent import AdapterAgent, AgentMetrics
from monitor.aliases import AliasTable
from monitor.fleet_metrics import ShardMetrics
from monitor.memory import tune_allocator
from monitor.metrics import SidecarMetrics
from monitor.object_store import ObjectStore, ObjectStoreError, StoreAccess
from monitor.routing import RoutingFollower, RoutingMetrics
from monitor.shard_sink import ShardSink
from monitor.shard_spool import ShardSpool, Uploader
from monitor.sidecar import Sidecar
from monitor.urls import redact_url
from monitor.vllm_admin import VLLMAdmin
from monitor.writer import CaptureWriter

log = logging.getLogger(__name__)

ROUTING_STATE = "routing.json"  # the last table applied, beside the spooled shards


@dataclass
class FleetSidecar:
    app: Sidecar
    aliases: AliasTable
    writer: CaptureWriter
    sink: ShardSink
    uploader: Uploader
    routing: RoutingFollower
    registry: CollectorRegistry
    agent: AdapterAgent | None = None

    def start(self) -> None:
        """Uploader, routing follower, adapter agent (the proxy's lifespan starts the writer)."""
        self.uploader.start()
        self.routing.start()
        if self.agent is not None:
            self.agent.start()

    def close(self) -> None:
        """Write what is buffered into a last shard, upload what storage takes, stop."""
        self.writer.close()
        self.sink.close()
        self.uploader.close()
        if self.agent is not None:
            self.agent.close()
            self.agent.admin.close()
        self.routing.close()


def fleet_token(cfg: Config) -> str:
    token = os.environ.get(cfg.fleet.token_env, "")
    if len(token) < 16:
        raise ConfigError(
            f"{cfg.fleet.token_env} must hold the fleet token (>= 16 characters) the controller"
            " was started with"
        )
    return token


def store_access(cfg: Config) -> StoreAccess:
    """The configured object store; S3 keys come from the environment variables named in config."""
    f = cfg.fleet
    return StoreAccess(
        f.object_store_url, f.s3_endpoint, f.s3_region, f.access_key_env, f.secret_key_env
    )


def open_object_store(cfg: Config) -> ObjectStore:
    try:
        return store_access(cfg).open()
    except ObjectStoreError as exc:
        raise ConfigError(f"fleet.object_store_url: {exc}") from None


def build_fleet_sidecar(
    cfg: Config,
    upstream_url: str,
    registry: CollectorRegistry | None = None,
    *,
    upstream_api_key: str | None = None,
) -> FleetSidecar:
    check_role(cfg, "sidecar")
    registry = registry or CollectorRegistry()
    metrics, shard_metrics = SidecarMetrics(registry), ShardMetrics(registry)
    aliases = alias_table(cfg)
    tune_allocator()
    spool = ShardSpool(cfg.fleet.spool_dir, cfg.fleet.spool_max_bytes, shard_metrics)
    sink = ShardSink(
        spool,
        cfg.fleet.sidecar_id,
        shard_metrics,
        max_bytes=cfg.fleet.shard_max_bytes,
        max_age_s=cfg.fleet.shard_max_age_s,
    )
    uploader = Uploader(
        spool,
        open_object_store(cfg),
        shard_metrics,
        tick=sink.seal_if_due,
        # The tick seals shards that reached their age: a quarter of it keeps kill -9 loss near
        # capture.flush_interval_s + 1.25 x fleet.shard_max_age_s.
        interval_s=min(0.5, cfg.fleet.shard_max_age_s / 4),
        rename=sink.rename,
    )
    sink.on_sealed = uploader.wake  # a sealed shard is uploaded now, not at the next tick
    writer = CaptureWriter(sink, metrics, **capture_writer_options(cfg))
    agent = None
    if cfg.fleet.adapter_agent:
        agent = AdapterAgent(
            VLLMAdmin(upstream_url, api_key=upstream_api_key),
            open_object_store(cfg),
            cfg.fleet.adapter_cache_dir,
            AgentMetrics(registry),
            report=lambda body: routing.report(body),
            interval_s=cfg.fleet.agent_interval_s,
        )
    routing = RoutingFollower(
        aliases,
        cfg.fleet.controller_url,
        fleet_token(cfg),
        cfg.fleet.sidecar_id,
        RoutingMetrics(registry),
        interval_s=cfg.fleet.routing_poll_s,
        state_path=cfg.fleet.spool_dir / ROUTING_STATE,
        on_wanted=agent.want if agent is not None else None,
    )
    proxy = build_proxy(cfg, upstream_url, metrics, aliases, writer, upstream_api_key)
    return FleetSidecar(
        Sidecar(proxy, writer), aliases, writer, sink, uploader, routing, registry, agent
    )


def run_sidecar(cfg: Config) -> None:
    """Run until SIGINT/SIGTERM: the proxy, the shard uploader and the routing follower."""
    fleet_token(cfg)
    check_role(cfg, "sidecar")
    exit_on_sigterm()
    with open_upstream(cfg) as (upstream_url, upstream_key):
        parts = build_fleet_sidecar(cfg, upstream_url, upstream_api_key=upstream_key)
        server = Server(uvicorn_config(parts.app, cfg.sidecar.host, cfg.sidecar.port))
        log.info(
            "sidecar %s on http://%s:%d -> %s; shards to %s; routing from %s",
            cfg.fleet.sidecar_id,
            cfg.sidecar.host,
            cfg.sidecar.port,
            redact_url(upstream_url),
            redact_url(cfg.fleet.object_store_url),
            redact_url(cfg.fleet.controller_url),
        )
        parts.start()
        try:
            uvloop.run(run_servers([server]))
        finally:
            parts.close()
