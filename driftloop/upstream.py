"""The vLLM driftloop watches, launched or external, and the API key that guards it.

A launched vLLM always gets a key (a fresh one per start unless ``vllm.api_key_env`` supplies one),
so only driftloop can reach its runtime-LoRA admin; the key is never logged or served.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
from collections.abc import Iterator, Mapping
from pathlib import Path

from driftloop.config import Config

log = logging.getLogger(__name__)


def upstream_api_key(cfg: Config, environ: Mapping[str, str] | None = None) -> str | None:
    """vLLM's API key from the env var ``vllm.api_key_env`` names, or None when it is unset."""
    env = os.environ if environ is None else environ
    key = env.get(cfg.vllm.api_key_env) if cfg.vllm.api_key_env else None
    if not key:
        return None
    # It goes into an HTTP header: anything else would fail on every request, far from here.
    if not all("!" <= char <= "~" for char in key):
        raise ValueError(
            f"{cfg.vllm.api_key_env} (named by vllm.api_key_env) must be printable ASCII"
            " without spaces"
        )
    return key


@contextlib.contextmanager
def open_upstream(cfg: Config) -> Iterator[tuple[str, str | None]]:
    """Start vLLM when configured to, else use ``sidecar.upstream_url``; yield (url, its key)."""
    try:
        key = upstream_api_key(cfg)
    except ValueError as exc:
        raise SystemExit(str(exc)) from None
    if not cfg.vllm.launch:
        if key is None:
            log.info(
                "%s is unset: clients' Authorization headers pass through upstream",
                cfg.vllm.api_key_env or "vllm.api_key_env",
            )
        yield cfg.sidecar.upstream_url, key
        return
    from driftloop.vllm_process import VLLMServer

    model_dir = cfg.vllm.model_dir or default_model_dir(cfg)
    if not (Path(model_dir) / "config.json").exists():
        raise SystemExit(
            f"model folder {model_dir} is missing: run `driftloop model prepare` first"
        )
    # Which key, never the key itself: it must not reach any log.
    source = f"from {cfg.vllm.api_key_env}" if key else "generated for this start"
    log.info("vLLM's API key is %s; only driftloop sends it", source)
    server = VLLMServer(
        model_dir=Path(model_dir),
        served_model_name=cfg.vllm.served_model_name,
        port=cfg.vllm.port,
        max_model_len=cfg.vllm.max_model_len,
        max_loras=cfg.vllm.max_loras,
        max_lora_rank=cfg.vllm.max_lora_rank,
        kv_cache_gib=cfg.vllm.kv_cache_gib,
        log_path=cfg.cache_dir / "vllm.log",
        api_key=key or secrets.token_urlsafe(32),
    )
    server.start(timeout_s=cfg.vllm.start_timeout_s)
    try:
        yield server.base_url, server.api_key
    finally:
        server.stop()


def default_model_dir(cfg: Config) -> Path:
    return cfg.cache_dir / "models" / "smollm2-135m-instruct"
