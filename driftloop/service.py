"""Wires configuration into running parts: vLLM (optional), the sidecar, the control API."""

from __future__ import annotations

import logging
import os
import secrets
from collections.abc import Callable
from dataclasses import dataclass

import uvloop
from prometheus_client import CollectorRegistry

from driftloop.api.app import create_api
from driftloop.api.guard import ApiGuard
from driftloop.api.judge_routes import judge_router
from driftloop.api.loop_routes import loop_router
from driftloop.api.server import ApiServer, ApiServerError
from driftloop.config import Config, check_api_token
from driftloop.judges_wiring import judge_jobs
from driftloop.proxy_wiring import (
    Server,
    alias_table,
    build_proxy,
    capture_writer_options,
    exit_on_sigterm,
    redactor,
    run_servers,
    uvicorn_config,
)
from driftloop.retrain_wiring import FleetDeployment, RetrainParts, build_retrain
from driftloop.scheduling import Job, Jobs
from driftloop.schema import MIGRATIONS
from driftloop.upstream import default_model_dir, open_upstream
from monitor.aliases import AliasTable
from monitor.drift_job import DriftJob, DriftSettings
from monitor.embedding_job import EmbeddingWorker, embed_pending
from monitor.faults import Faults
from monitor.memory import tune_allocator
from monitor.metrics import DriftMetrics, SidecarMetrics
from monitor.sidecar import Sidecar
from monitor.store import Store, StoreCorruptError, StoreError
from monitor.urls import redact_url
from monitor.writer import CaptureWriter
from retrain.control import LoopControl

log = logging.getLogger(__name__)

TOKEN_FILE = "api-token"


@dataclass
class Components:
    sidecar: Sidecar
    store: Store | None
    aliases: AliasTable
    registry: CollectorRegistry
    jobs: Jobs | None = None
    embedder: EmbeddingWorker | None = None
    retrain: RetrainParts | None = None

    def close(self) -> None:
        """Stop background jobs and the embedding worker, then close the store."""
        if self.jobs is not None:
            self.jobs.stop()
        if self.embedder is not None:
            self.embedder.close()
        if self.retrain is not None:
            self.retrain.close()
        if self.store is not None:
            self.store.close()

    def add_jobs(self, jobs: list[Job]) -> None:
        """Schedule ``jobs`` with the others; the first ones to arrive create the scheduler."""
        if self.jobs is None:
            self.jobs = Jobs(jobs)
        else:
            self.jobs.add(*jobs)


def build_components(
    cfg: Config,
    upstream_url: str,
    registry: CollectorRegistry | None = None,
    *,
    upstream_api_key: str | None = None,
) -> Components:
    """Everything the sidecar needs, built from config; an unopenable store disables capture only.

    ``upstream_api_key`` is vLLM's key: the proxy, the judges and the retrain loop send it, and
    clients never need it (None: clients' own Authorization headers reach the upstream).
    """
    registry = registry or CollectorRegistry()
    metrics = SidecarMetrics(registry)
    aliases = alias_table(cfg)
    store, writer = _open_capture(cfg, metrics) if cfg.capture.enabled else (None, None)
    proxy = build_proxy(cfg, upstream_url, metrics, aliases, writer, upstream_api_key)
    parts = Components(Sidecar(proxy, writer), store, aliases, registry)
    if cfg.drift.enabled and store is not None:
        parts.embedder, parts.jobs = drift_jobs(cfg, store, registry, aliases)
    if cfg.judges.enabled and store is not None:
        # Independent of drift: judging runs (and fails) on its own; the proxy never waits on it.
        parts.add_jobs(judge_jobs(cfg, store, registry, aliases, upstream_url, upstream_api_key))
    if cfg.retrain.enabled and store is not None and cfg.aliases:
        parts.retrain = build_retrain_loop(
            cfg, store, registry, aliases, upstream_url, upstream_api_key
        )
        parts.add_jobs([Job("retrain", parts.retrain.loop.tick, cfg.retrain.interval_s)])
    return parts


def _open_capture(cfg: Config, metrics: SidecarMetrics) -> tuple[Store | None, CaptureWriter]:
    """Open the capture store and its writer; a store that cannot open leaves the writer retrying."""
    tune_allocator()
    faults = Faults.from_env()
    store, opener, problem = _open_store(cfg, faults)
    writer = CaptureWriter(
        store,
        metrics,
        opener=opener,
        problem=problem,
        faults=faults,
        **capture_writer_options(cfg),
    )
    return store, writer


def build_retrain_loop(
    cfg: Config,
    store: Store,
    registry: CollectorRegistry,
    aliases: AliasTable,
    upstream_url: str,
    upstream_api_key: str | None,
    fleet: FleetDeployment | None = None,
) -> RetrainParts:
    """The retrain loop for every configured alias, training on the resolved base model folder."""
    return build_retrain(
        cfg,
        store,
        registry,
        aliases,
        upstream_url,
        base_model_dir=cfg.retrain.base_model_dir or cfg.vllm.model_dir or default_model_dir(cfg),
        retrain_aliases=lambda: sorted(cfg.aliases),
        upstream_api_key=upstream_api_key,
        fleet=fleet,
    )


def open_database(cfg: Config, faults: Faults | None = None) -> Store:
    """The DuckDB file of `serve` and of the controller, with every package's tables."""
    return Store.open(
        cfg.capture.db_path,
        memory_limit_bytes=cfg.capture.duckdb_memory_limit_bytes,
        threads=cfg.capture.duckdb_threads,
        verify=True,  # a mangled block fails here, naming the file, not in a later query
        faults=faults,
        migrations=MIGRATIONS,  # every package's tables: this process runs them all
    )


def _open_store(
    cfg: Config, faults: Faults
) -> tuple[Store | None, Callable[[], Store] | None, str | None]:
    """The capture store, or why not and how the writer retries (None: it must not retry)."""

    def opener() -> Store:
        return open_database(cfg, faults)

    try:
        return opener(), None, None
    except StoreCorruptError as exc:
        # Fail open: traffic flows, and captures are dropped (counted) until an operator acts.
        log.error("capture disabled: %s", exc)
        return None, None, str(exc)
    except StoreError as exc:
        # Maybe transient (a full disk, a missing mount): the writer retries with backoff and
        # buffers meanwhile. Drift, judges and retrain need the store at start: they stay off.
        log.error("capture store unavailable, retrying in the background: %s", exc)
        return None, opener, str(exc)


def reconcile_deployments(retrain: RetrainParts | None) -> None:
    """After a (re)start: route every alias to what the registry says is in production."""
    if retrain is None:
        return
    for alias in retrain.loop.aliases():
        try:
            route = retrain.loop.reconcile(alias)
            log.info("%s routes to %s", alias, route.served_name)
        except Exception as exc:  # vLLM down: serve anyway, the alias keeps its configured route
            log.error("could not reconcile %s with vLLM: %s", alias, exc)


def drift_jobs(
    cfg: Config, store: Store, registry: CollectorRegistry, aliases: AliasTable
) -> tuple[EmbeddingWorker, Jobs]:
    """Embedding (in a niced worker process) and drift evaluation, each on its own interval."""
    embedder = EmbeddingWorker(
        backend=cfg.drift.embedding_backend,
        threads=cfg.drift.embedding_threads,
        cache_dir=cfg.cache_dir / "embeddings",
    )
    metrics = DriftMetrics(registry)
    drift = DriftJob(
        store,
        metrics,
        DriftSettings(
            reference_size=cfg.drift.reference_size,
            window_size=cfg.drift.window_size,
            min_samples=cfg.drift.min_samples,
            alpha=cfg.drift.alpha,
            embedding_model=embedder.model_name,
            sessions=cfg.drift.sessions,
        ),
        aliases=aliases.known,
    )

    def embed() -> int:
        written = embed_pending(
            store, embedder.encode, embedder.model_name, limit=cfg.drift.embed_batch
        )
        metrics.embeddings_written.inc(written)
        return written

    jobs = Jobs(
        [
            Job("embed", embed, cfg.drift.embed_interval_s),
            Job("drift", drift.run, cfg.drift.interval_s),
        ]
    )
    return embedder, jobs


def api_token(cfg: Config) -> str:
    """The control API token: from the configured env var, else a generated one kept in cache_dir."""
    token = os.environ.get(cfg.api.token_env)
    if token:
        return check_api_token(token, cfg.api.token_env)
    path = cfg.cache_dir / TOKEN_FILE
    if path.exists():
        return check_api_token(path.read_bytes().decode("utf-8", "replace").strip(), str(path))
    path.parent.mkdir(parents=True, exist_ok=True)
    token = secrets.token_urlsafe(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(token)
    log.info("generated a control API token in %s (set %s to choose one)", path, cfg.api.token_env)
    return token


def serve(cfg: Config) -> None:
    """Run until SIGINT/SIGTERM: optionally vLLM, then the sidecar and the control API."""
    from driftloop.listeners import check_listeners

    # Fail in one line (ConfigError) before vLLM spends minutes starting: token, then ports.
    api_token(cfg)
    check_listeners(cfg)
    exit_on_sigterm()
    with open_upstream(cfg) as (upstream_url, upstream_key):
        parts = build_components(cfg, upstream_url, upstream_api_key=upstream_key)
        reconcile_deployments(parts.retrain)
        api = ApiServer(control_api(cfg, parts), cfg.api.host, cfg.api.port)
        sidecar = Server(uvicorn_config(parts.sidecar, cfg.sidecar.host, cfg.sidecar.port))
        log.info(
            "sidecar on http://%s:%d -> %s; metrics at /metrics; control API on http://%s:%d",
            cfg.sidecar.host,
            cfg.sidecar.port,
            redact_url(upstream_url),
            cfg.api.host,
            cfg.api.port,
        )
        if parts.jobs is not None:
            parts.jobs.start()
        try:
            # The API gets its own thread and loop: nothing it does may stall proxied traffic.
            try:
                api.start()
            except ApiServerError as exc:
                raise SystemExit(str(exc)) from None
            # uvicorn's loop="uvloop" applies only under Server.run(); signals need our own.
            uvloop.run(run_servers([sidecar]))
        finally:
            api.stop()
            parts.close()


def control_api(cfg: Config, parts: Components) -> ApiGuard:
    """The control API as ``serve`` runs it: the loop's routes mounted when the loop runs."""
    routers = []
    if parts.retrain is not None:
        control = LoopControl(parts.retrain.loop)
        routers.append(loop_router(control, lambda: set(cfg.aliases), redactor(cfg)))
        routers.append(judge_router(parts.retrain.calibrator))
    return create_api(
        api_token(cfg),
        parts.store,
        parts.sidecar,
        parts.aliases,
        routers,
        registry=parts.registry,
        unauthenticated_rate_per_s=cfg.api.unauthenticated_rate_per_s,
        unauthenticated_burst=cfg.api.unauthenticated_burst,
    )
