"""Wires configuration into running parts: vLLM (optional), the sidecar, the control API."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import signal
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import uvicorn
import uvloop
from prometheus_client import CollectorRegistry

from driftloop.api import create_api
from driftloop.config import Config
from driftloop.loop_api import loop_router
from driftloop.retrain_wiring import RetrainParts, build_retrain
from driftloop.scheduling import Job, Jobs
from judges.anchors import AnchorJob
from judges.budget import DailyBudget, spent_in_store
from judges.client import Endpoint
from judges.examples import ANCHOR_SET, load_examples, set_version
from judges.job import JudgeJob, JudgeSettings
from judges.llm import RubricJudge
from judges.metrics import JudgeMetrics
from judges.registry import build_rule_judge
from judges.rubric import load_rubric
from judges.runner import Runner
from monitor.aliases import AliasTable
from monitor.drift_job import DriftJob, DriftSettings
from monitor.embedding_job import EmbeddingWorker, embed_pending
from monitor.metrics import DriftMetrics, SidecarMetrics
from monitor.proxy import OpenAIProxy
from monitor.redaction import PatternRedactor
from monitor.sampling import Sampler
from monitor.sidecar import Sidecar
from monitor.store import Store, StoreError
from monitor.writer import CaptureWriter

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


def build_components(
    cfg: Config, upstream_url: str, registry: CollectorRegistry | None = None
) -> Components:
    """Everything the sidecar needs, built from config; an unopenable store disables capture only."""
    registry = registry or CollectorRegistry()
    metrics = SidecarMetrics(registry)
    known = {cfg.vllm.served_model_name, *cfg.capture.sample_rates, *cfg.aliases.values()}
    aliases = AliasTable(cfg.aliases, known_models=known)
    store = None
    writer = None
    if cfg.capture.enabled:
        try:
            store = Store.open(cfg.capture.db_path)
        except StoreError as exc:
            # Fail open: traffic flows, capture losses are counted as store_unavailable.
            log.error("capture disabled: %s", exc)
        writer = CaptureWriter(
            store,
            metrics,
            queue_size=cfg.capture.queue_size,
            batch_size=cfg.capture.batch_size,
            flush_interval_s=cfg.capture.flush_interval_s,
            redact=PatternRedactor(cfg.capture.redact_patterns),
        )
    proxy = OpenAIProxy(
        upstream_url,
        metrics=metrics,
        aliases=aliases,
        sampler=Sampler(cfg.capture.sample_rate, cfg.capture.sample_rates),
        writer=writer,
        timeout_s=cfg.sidecar.upstream_timeout_s,
        connect_timeout_s=cfg.sidecar.upstream_connect_timeout_s,
        max_connections=cfg.sidecar.max_connections,
        max_body_bytes=cfg.capture.max_body_bytes,
    )
    parts = Components(Sidecar(proxy, writer), store, aliases, registry)
    if cfg.drift.enabled and store is not None:
        parts.embedder, parts.jobs = _drift_jobs(cfg, store, registry, aliases)
    if cfg.judges.enabled and store is not None:
        # Independent of drift: judging runs (and fails) on its own; the proxy never waits on it.
        judge_jobs = _judge_jobs(cfg, store, registry, aliases, upstream_url)
        if parts.jobs is None:
            parts.jobs = Jobs(judge_jobs)
        else:
            parts.jobs.jobs.extend(judge_jobs)
    if cfg.retrain.enabled and store is not None and cfg.aliases:
        parts.retrain = build_retrain(
            cfg,
            store,
            registry,
            aliases,
            upstream_url,
            base_model_dir=cfg.retrain.base_model_dir
            or cfg.vllm.model_dir
            or default_model_dir(cfg),
            retrain_aliases=lambda: sorted(cfg.aliases),
        )
        retrain_job = Job("retrain", parts.retrain.loop.tick, cfg.retrain.interval_s)
        if parts.jobs is None:
            parts.jobs = Jobs([retrain_job])
        else:
            parts.jobs.jobs.append(retrain_job)
    return parts


def reconcile_deployments(parts: Components) -> None:
    """After a (re)start: route every alias to what the registry says is in production."""
    if parts.retrain is None:
        return
    for alias in parts.retrain.loop.aliases():
        try:
            route = parts.retrain.loop.deployer.reconcile(alias)
            log.info("%s routes to %s", alias, route.served_name)
        except Exception as exc:  # vLLM down: serve anyway, the alias keeps its configured route
            log.error("could not reconcile %s with vLLM: %s", alias, exc)


def rubric_judge(cfg: Config, upstream_url: str) -> RubricJudge:
    """The configured LLM judge; its endpoint defaults to the upstream vLLM and its served model."""
    endpoint = Endpoint(
        base_url=cfg.judges.base_url or f"{upstream_url.rstrip('/')}/v1",
        model=cfg.judges.model or cfg.vllm.served_model_name,
        api_key_env=cfg.judges.api_key_env,
        timeout_s=cfg.judges.timeout_s,
        max_retries=cfg.judges.max_retries,
        backoff_s=cfg.judges.backoff_s,
    )
    return RubricJudge(
        load_rubric(cfg.judges.rubric),
        endpoint,
        max_tokens=cfg.judges.max_tokens,
        structured_output=cfg.judges.structured_output,
    )


def _judge_jobs(
    cfg: Config, store: Store, registry: CollectorRegistry, aliases: AliasTable, upstream_url: str
) -> list[Job]:
    """Judge sampled traffic (LLM + rule judges, budgeted) and re-judge the anchor set."""
    judges_cfg = cfg.judges
    runner = Runner(store, JudgeMetrics(registry), concurrency=judges_cfg.concurrency)
    llm = rubric_judge(cfg, upstream_url)
    budget = DailyBudget(
        judges_cfg.daily_token_budget,
        judges_cfg.daily_request_budget,
        spent_on=spent_in_store(store, llm.name),
    )
    rules = [build_rule_judge(kind, params) for kind, params in judges_cfg.rules.items()]
    job = JudgeJob(
        runner,
        [llm, *rules],
        {llm.name: budget},
        JudgeSettings(
            sample_rate=judges_cfg.sample_rate,
            sample_rates=judges_cfg.sample_rates,
            per_alias=judges_cfg.per_alias,
            window_size=judges_cfg.window_size,
        ),
        aliases=aliases.known,
    )
    anchor_path = judges_cfg.anchor_set or ANCHOR_SET
    anchors = AnchorJob(
        runner,
        llm,
        load_examples(anchor_path, labelled=False),
        set_version(anchor_path),
        max_shift=judges_cfg.anchor_max_shift,
        budget=budget,
    )
    return [
        Job("judge", job.run, judges_cfg.interval_s),
        Job("judge-anchors", anchors.run, judges_cfg.anchor_interval_s),
    ]


def _drift_jobs(
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
        return token
    path = cfg.cache_dir / TOKEN_FILE
    if path.exists():
        return path.read_text().strip()
    path.parent.mkdir(parents=True, exist_ok=True)
    token = secrets.token_urlsafe(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(token)
    log.info("generated a control API token in %s (set %s to choose one)", path, cfg.api.token_env)
    return token


class _Server(uvicorn.Server):
    """A uvicorn server that leaves signal handling to ``serve`` (two servers share one loop)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def _uvicorn_config(app: object, host: str, port: int) -> uvicorn.Config:
    return uvicorn.Config(
        app,  # type: ignore[arg-type]
        host=host,
        port=port,
        loop="uvloop",
        http="httptools",
        lifespan="on",
        access_log=False,
        log_level="warning",
        timeout_graceful_shutdown=10,
    )


def serve(cfg: Config) -> None:
    """Run until SIGINT/SIGTERM: optionally vLLM, then the sidecar and the control API."""
    exit_on_sigterm()
    with _upstream(cfg) as upstream_url:
        parts = build_components(cfg, upstream_url)
        reconcile_deployments(parts)
        routers = []
        if parts.retrain is not None:
            routers.append(loop_router(parts.retrain.loop, lambda: set(cfg.aliases)))
        api = create_api(api_token(cfg), parts.store, parts.sidecar, parts.aliases, routers)
        servers = [
            _Server(_uvicorn_config(parts.sidecar, cfg.sidecar.host, cfg.sidecar.port)),
            _Server(_uvicorn_config(api, cfg.api.host, cfg.api.port)),
        ]
        log.info(
            "sidecar on http://%s:%d -> %s; metrics at /metrics; control API on http://%s:%d",
            cfg.sidecar.host,
            cfg.sidecar.port,
            upstream_url,
            cfg.api.host,
            cfg.api.port,
        )
        if parts.jobs is not None:
            parts.jobs.start()
        try:
            # uvicorn's loop="uvloop" applies only under Server.run(); two servers need our own.
            uvloop.run(_run_servers(servers))
        finally:
            parts.close()


async def _run_servers(servers: list[_Server]) -> None:
    def stop_all() -> None:
        for server in servers:
            server.should_exit = True

    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop_all)
    await asyncio.gather(*(server.serve() for server in servers))


@contextlib.contextmanager
def _upstream(cfg: Config) -> Iterator[str]:
    """Start vLLM when configured to, else use ``sidecar.upstream_url`` as it is."""
    if not cfg.vllm.launch:
        yield cfg.sidecar.upstream_url
        return
    from monitor.vllm_process import VLLMServer

    model_dir = cfg.vllm.model_dir or default_model_dir(cfg)
    if not (Path(model_dir) / "config.json").exists():
        raise SystemExit(
            f"model folder {model_dir} is missing: run `driftloop model prepare` first"
        )
    server = VLLMServer(
        model_dir=Path(model_dir),
        served_model_name=cfg.vllm.served_model_name,
        port=cfg.vllm.port,
        max_model_len=cfg.vllm.max_model_len,
        max_loras=cfg.vllm.max_loras,
        max_lora_rank=cfg.vllm.max_lora_rank,
        kv_cache_gib=cfg.vllm.kv_cache_gib,
        log_path=cfg.cache_dir / "vllm.log",
    )
    server.start(timeout_s=cfg.vllm.start_timeout_s)
    try:
        yield server.base_url
    finally:
        server.stop()


def exit_on_sigterm() -> None:
    """Turn SIGTERM into SystemExit, so cleanup (stopping a child vLLM) runs on the way out."""

    def leave(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, leave)


def default_model_dir(cfg: Config) -> Path:
    return cfg.cache_dir / "models" / "smollm2-135m-instruct"
