"""The request path's wiring, shared by `driftloop serve` and `driftloop sidecar`.

Imports only ``monitor`` and the config: a fleet sidecar runs this without the loop's packages.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import signal
from collections.abc import Iterator
from typing import Any

import uvicorn

from driftloop.config import Config
from monitor.aliases import AliasTable
from monitor.limits import ClientLimits
from monitor.metrics import SidecarMetrics
from monitor.proxy import OpenAIProxy
from monitor.redaction import PatternRedactor
from monitor.sampling import Sampler, TrustedNetworks
from monitor.sidecar import Sidecar
from monitor.writer import CaptureWriter


def alias_table(cfg: Config) -> AliasTable:
    """The configured aliases; every served or sampled name is a known metric label."""
    known = {cfg.vllm.served_model_name, *cfg.capture.sample_rates, *cfg.aliases.values()}
    return AliasTable(cfg.aliases, known_models=known)


def capture_writer_options(cfg: Config) -> dict[str, Any]:
    """The capture writer's buffer, batching and redaction settings (capture.*), for any sink."""
    capture = cfg.capture
    return {
        "queue_size": capture.queue_size,
        "max_buffer_bytes": capture.max_buffer_bytes,
        "batch_size": capture.batch_size,
        "max_batch_bytes": capture.max_batch_bytes,
        "flush_interval_s": capture.flush_interval_s,
        "rows_in_child": capture.rows_in_child,
        "redact": redactor(cfg),
    }


def build_proxy(
    cfg: Config,
    upstream_url: str,
    metrics: SidecarMetrics,
    aliases: AliasTable,
    writer: CaptureWriter | None,
    upstream_api_key: str | None,
) -> OpenAIProxy:
    """The OpenAI-compatible proxy in front of vLLM, with its sampling, timeouts and limits."""
    return OpenAIProxy(
        upstream_url,
        metrics=metrics,
        aliases=aliases,
        sampler=Sampler(cfg.capture.sample_rate, cfg.capture.sample_rates),
        writer=writer,
        first_byte_timeout_s=cfg.sidecar.first_byte_timeout_s,
        idle_timeout_s=cfg.sidecar.idle_timeout_s,
        connect_timeout_s=cfg.sidecar.upstream_connect_timeout_s,
        max_connections=cfg.sidecar.max_connections,
        max_body_bytes=cfg.capture.max_body_bytes,
        limits=client_limits(cfg),
        forward_paths=cfg.sidecar.forward_paths,
        trusted_networks=TrustedNetworks(cfg.capture.trusted_networks),
        upstream_api_key=upstream_api_key,
        session_header=cfg.capture.session_header,
    )


def client_limits(cfg: Config) -> ClientLimits:
    """What one client may make the sidecar hold (sidecar.* limits)."""
    side = cfg.sidecar
    return ClientLimits(
        max_body_bytes=side.max_request_body_bytes,
        max_header_bytes=side.max_header_bytes,
        header_timeout_s=side.header_timeout_s,
        body_timeout_s=side.body_timeout_s,
        keep_alive_timeout_s=side.keep_alive_timeout_s,
        max_connections=side.max_client_connections,
    )


def redactor(cfg: Config) -> PatternRedactor:
    """What captured traffic and feedback go through before they are stored."""
    return PatternRedactor(cfg.capture.redact_patterns, detectors=cfg.capture.redact_detectors)


class Server(uvicorn.Server):
    """A uvicorn server that leaves signal handling to ``serve`` (two servers share one loop)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def uvicorn_config(app: Sidecar, host: str, port: int) -> uvicorn.Config:
    """The sidecar's server: uvloop + httptools, guarded by the client limits (monitor/limits.py)."""
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        loop="uvloop",
        lifespan="on",
        access_log=False,
        log_level="warning",
        timeout_graceful_shutdown=10,
        **app.server_options(),
    )


async def run_servers(servers: list[Server]) -> None:
    def stop_all() -> None:
        for server in servers:
            server.should_exit = True

    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop_all)
    # Everything imported and built so far lives as long as the process: moving it out of the
    # collector's generations keeps full collections from pausing the event loop for tens of ms.
    gc.freeze()
    await asyncio.gather(*(server.serve() for server in servers))


def exit_on_sigterm() -> None:
    """Turn SIGTERM into SystemExit, so cleanup (stopping a child vLLM) runs on the way out."""

    def leave(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, leave)
