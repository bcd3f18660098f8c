"""The control API as ``serve`` runs it (its own thread and uvicorn config), for the hardening tests."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from fastapi import APIRouter
from prometheus_client import CollectorRegistry

from driftloop.api.app import create_api
from driftloop.api.guard import ApiGuard
from driftloop.api.server import ApiServer
from driftloop.service import Components, api_token, build_components, control_api
from tests.conftest import make_config

DEAD_UPSTREAM = "http://127.0.0.1:9"  # nothing listens: the API must not need vLLM to answer


@dataclass
class RunningApi:
    url: str
    token: str
    parts: Components
    guard: ApiGuard

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=30)

    def audit(self, limit: int = 1000) -> list[dict[str, Any]]:
        """Every audit row so far, oldest first (the API flushes its buffer before reading)."""
        reply = httpx.get(self.url + "/api/v1/audit", params={"limit": limit}, headers=self.auth)
        reply.raise_for_status()
        rows = reply.json()
        for row in rows:
            row["detail"] = json.loads(row["detail"]) if row["detail"] else None
        return list(reversed(rows))

    def rows(self, sql: str, params: list[Any] | None = None) -> list[tuple[Any, ...]]:
        """Read the service's DuckDB file directly (for rows the API does not serve)."""
        if self.parts.store is None:
            raise RuntimeError("the capture store did not open")
        return self.parts.store.query(sql, params)

    def metric(self, name: str, **labels: str) -> float:
        return self.parts.registry.get_sample_value(name, labels) or 0.0


@contextlib.contextmanager
def running_api(
    tmp_path: Path, routers: Sequence[APIRouter] = (), **sections: dict[str, Any]
) -> Iterator[RunningApi]:
    """The service's control API (retrain routes mounted) on 127.0.0.1, a free port."""
    sections = {
        "aliases": {"support": "smollm2"},
        "judges": {"enabled": False},
        "drift": {"enabled": False},
        "api": {"port": 0, **sections.pop("api", {})},
        **sections,
    }
    cfg = make_config(tmp_path, **sections)
    parts = build_components(cfg, DEAD_UPSTREAM, CollectorRegistry())
    try:
        if routers:  # the service's app plus test routes: same guard, same audit
            guard = create_api(
                api_token(cfg),
                parts.store,
                parts.sidecar,
                parts.aliases,
                routers,
                registry=parts.registry,
            )
        else:
            guard = control_api(cfg, parts)
        with ApiServer(guard, "127.0.0.1", 0) as server:
            yield RunningApi(server.url, api_token(cfg), parts, guard)
    finally:
        parts.close()
