"""Shared fixtures: the real vLLM (once per session), sidecars on 127.0.0.1, fresh registries."""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from driftloop.config import Config, load_config
from driftloop.service import Components, build_components
from tests.servers import serve_in_thread

REPO = Path(__file__).resolve().parent.parent
CACHE_DIR = Path(os.environ.get("DRIFTLOOP_CACHE_DIR", REPO / ".cache"))
SERVED_NAME = "smollm2"


@dataclass
class RunningSidecar:
    url: str
    parts: Components
    config: Config

    def metric(self, name: str, **labels: str) -> float:
        return self.parts.registry.get_sample_value(name, labels) or 0.0

    def rows(self, sql: str, params: list[Any] | None = None) -> list[tuple[Any, ...]]:
        assert self.parts.store is not None
        return self.parts.store.query(sql, params)

    def flush(self) -> None:
        """Wait until in-flight requests finished and every capture so far is in DuckDB."""
        deadline = time.monotonic() + 10
        while self.metric("driftloop_proxy_requests_in_flight") and time.monotonic() < deadline:
            time.sleep(0.01)
        writer = self.parts.sidecar.writer
        assert writer is not None and writer.flush(), "capture writer did not flush"


def make_config(tmp_path: Path, **sections: dict[str, Any]) -> Config:
    env = {}
    for section, values in sections.items():
        for key, value in values.items():
            # The key keeps its case: it may be a model name (aliases, sample_rates).
            env[f"DRIFTLOOP__{section.upper()}__{key}"] = (
                value if isinstance(value, str) else json.dumps(value)
            )
    env.setdefault("DRIFTLOOP__CAPTURE__DB_PATH", str(tmp_path / "capture.duckdb"))
    env.setdefault("DRIFTLOOP__CACHE_DIR", str(tmp_path / "cache"))
    return load_config(None, environ=env)


@pytest.fixture
def start_sidecar(tmp_path: Path) -> Iterator[Callable[..., RunningSidecar]]:
    """Start sidecars in front of a given upstream; all are stopped after the test."""
    stack = contextlib.ExitStack()

    def start(
        upstream_url: str, *, upstream_api_key: str | None = None, **sections: dict[str, Any]
    ) -> RunningSidecar:
        cfg = make_config(tmp_path, **sections)
        parts = build_components(
            cfg, upstream_url, CollectorRegistry(), upstream_api_key=upstream_api_key
        )
        if parts.store is not None:
            stack.callback(parts.close)  # runs after the server (and its writer) stopped
        url = stack.enter_context(serve_in_thread(parts.sidecar, **parts.sidecar.server_options()))
        return RunningSidecar(url, parts, cfg)

    with stack:
        yield start


@pytest.fixture(scope="session")
def smollm2_dir() -> Path:
    from retrain.training.base_models import prepare_smollm2

    return prepare_smollm2(CACHE_DIR / "models" / "smollm2-135m-instruct")


@contextlib.contextmanager
def running_vllm(model_dir: Path, log_name: str, **options: Any) -> Iterator[Any]:
    """A real vLLM serving ``model_dir`` as SERVED_NAME with runtime LoRA and its own API key."""
    from driftloop.vllm_process import VLLMServer

    server = VLLMServer(
        model_dir,
        SERVED_NAME,
        max_model_len=1024,
        log_path=CACHE_DIR / log_name,
        api_key=secrets.token_urlsafe(32),
        **options,
    )
    server.start(timeout_s=400)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def vllm_server(smollm2_dir: Path) -> Iterator[Any]:
    """One real vLLM serving SmolLM2-135M-Instruct with runtime LoRA, for the whole session.

    It wants ``server.api_key`` on every ``/v1`` path, as the vLLM that ``serve`` launches does,
    so tests call it (directly or through a sidecar given the key) the way production does.
    """
    with running_vllm(smollm2_dir, "test-vllm.log") as server:
        yield server
