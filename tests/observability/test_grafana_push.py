"""`driftloop dashboards push` through grafana-client against a stand-in for Grafana's HTTP API.

Grafana itself cannot run here (no package on this machine's registries), so a small real HTTP
server answers the three endpoints a push uses (folder read/create, dashboard upsert) the way
Grafana 11 documents them, and records what it received.
"""

from __future__ import annotations

import json
import socket
from typing import Any

import pytest
from click.testing import CliRunner
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from dashboards.build import build_dashboards
from dashboards.grafana import GrafanaPushError, grafana_token, push_dashboards
from driftloop.cli.main import cli
from driftloop.config import GrafanaConfig
from tests.servers import serve_in_thread

TOKEN = "glsa_test_token"


def grafana_api(received: list[dict[str, Any]]) -> FastAPI:
    app = FastAPI()
    folders: set[str] = set()
    versions: dict[str, int] = {}

    @app.middleware("http")
    async def authorize(request: Request, call_next):  # type: ignore[no-untyped-def]
        if request.headers.get("authorization") != f"Bearer {TOKEN}":
            return JSONResponse({"message": "invalid API key"}, status_code=401)
        return await call_next(request)

    @app.get("/api/folders/{uid}")
    async def get_folder(uid: str) -> JSONResponse:
        received.append({"call": "get_folder", "uid": uid})
        if uid not in folders:
            return JSONResponse({"message": "folder not found"}, status_code=404)
        return JSONResponse({"uid": uid, "title": uid})

    @app.post("/api/folders")
    async def create_folder(request: Request) -> JSONResponse:
        body = await request.json()
        received.append({"call": "create_folder", **body})
        folders.add(body["uid"])
        return JSONResponse({"uid": body["uid"], "title": body["title"]})

    @app.post("/api/dashboards/db")
    async def upsert(request: Request) -> JSONResponse:
        body = await request.json()
        received.append({"call": "dashboard", **body})
        uid = body["dashboard"]["uid"]
        versions[uid] = versions.get(uid, 0) + 1
        return JSONResponse(
            {"status": "success", "uid": uid, "url": f"/d/{uid}/x", "version": versions[uid]}
        )

    return app


@pytest.fixture
def grafana():
    received: list[dict[str, Any]] = []
    with serve_in_thread(grafana_api(received)) as url:
        yield url, received


def test_push_creates_the_folder_once_and_upserts_every_dashboard(grafana):
    url, received = grafana
    cfg = GrafanaConfig(url=url, folder="driftloop", datasource_uid="prom-main")
    first = push_dashboards(cfg, build_dashboards(), TOKEN)
    second = push_dashboards(cfg, build_dashboards(), TOKEN)
    assert [p.uid for p in first] == [
        "driftloop-drift",
        "driftloop-loop",
        "driftloop-quality",
        "driftloop-traffic",
    ]
    assert first[0].url == f"{url}/d/driftloop-drift/x"
    assert [p.version for p in second] == [2, 2, 2, 2]
    calls = [r["call"] for r in received]
    assert calls.count("create_folder") == 1 and calls.count("dashboard") == 8
    upload = next(r for r in received if r["call"] == "dashboard")
    assert upload["overwrite"] is True and upload["folderUid"] == "driftloop"
    text = json.dumps(upload["dashboard"])
    assert '"uid": "prom-main"' in text and "driftloop-prometheus" not in text


def test_push_from_the_cli_reads_url_and_token_from_config_and_env(grafana, tmp_path):
    url, received = grafana
    config = tmp_path / "driftloop.toml"
    config.write_text(f'[grafana]\nurl = "{url}"\ntoken_env = "MY_GRAFANA_TOKEN"\n')
    result = CliRunner().invoke(
        cli, ["dashboards", "push", "--config", str(config)], env={"MY_GRAFANA_TOKEN": TOKEN}
    )
    assert result.exit_code == 0, result.output
    assert "driftloop / Drift: " in result.output and "(version 1)" in result.output
    assert sum(r["call"] == "dashboard" for r in received) == 4
    missing = CliRunner().invoke(
        cli, ["dashboards", "push", "--config", str(config)], env={"MY_GRAFANA_TOKEN": ""}
    )
    assert missing.exit_code == 1 and "MY_GRAFANA_TOKEN" in missing.output


def test_a_refused_token_and_an_unreachable_grafana_are_named(grafana):
    url, _ = grafana
    with pytest.raises(GrafanaPushError, match=r"refused reading folder 'driftloop': HTTP 401"):
        push_dashboards(GrafanaConfig(url=url), build_dashboards(), "wrong")
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    dead = GrafanaConfig(url=f"http://127.0.0.1:{port}", timeout_s=2)
    with pytest.raises(GrafanaPushError, match="unreachable while reading folder"):
        push_dashboards(dead, build_dashboards(), TOKEN)
    with pytest.raises(GrafanaPushError, match=r"grafana\.url is empty"):
        push_dashboards(GrafanaConfig(), build_dashboards(), TOKEN)
    with pytest.raises(GrafanaPushError, match="DRIFTLOOP_GRAFANA_TOKEN"):
        grafana_token(GrafanaConfig(), environ={})
