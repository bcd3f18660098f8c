"""The control API over real HTTP: token required, bad input named, every call audited."""

import httpx
import pytest
from prometheus_client import CollectorRegistry

from driftloop.api.app import create_api
from driftloop.service import build_components
from tests.conftest import make_config
from tests.servers import serve_in_thread

TOKEN = "t" * 32


@pytest.fixture
def api(tmp_path):
    parts = build_components(make_config(tmp_path), "http://127.0.0.1:9", CollectorRegistry())
    app = create_api(TOKEN, parts.store, parts.sidecar, parts.aliases)
    with serve_in_thread(app) as url:
        yield url, parts
    parts.close()


def audit_rows(url):
    """Audit rows through the API, which writes what it buffered before reading."""
    return httpx.get(url + "/api/v1/audit", headers={"Authorization": f"Bearer {TOKEN}"}).json()


@pytest.mark.parametrize(
    "headers", [{}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}]
)
def test_requests_without_the_token_get_401(api, headers):
    url, _ = api
    response = httpx.get(url + "/api/v1/status", headers=headers)
    assert response.status_code == 401
    assert response.json() == {"detail": "missing or wrong bearer token"}


def test_status_and_requests_with_the_token(api):
    url, _ = api
    auth = {"Authorization": f"Bearer {TOKEN}"}
    status = httpx.get(url + "/api/v1/status", headers=auth).json()
    assert status["captured"]["rows"] == 0
    assert status["sidecar"]["capture"] in {"ok", "degraded"}
    assert httpx.get(url + "/api/v1/requests", headers=auth).json() == []


def test_bad_query_is_422_naming_the_field(api):
    url, _ = api
    response = httpx.get(
        url + "/api/v1/requests?limit=0", headers={"Authorization": f"Bearer {TOKEN}"}
    )
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["query", "limit"]


def test_every_call_is_audited_with_actor_and_result(api):
    url, _ = api
    httpx.get(url + "/api/v1/status")
    httpx.get(url + "/api/v1/requests?limit=5", headers={"Authorization": f"Bearer {TOKEN}"})
    rows = [
        (r["actor"], r["method"], r["path"], r["status_code"], r["detail"])
        for r in reversed(audit_rows(url))
    ]
    assert rows == [
        ("anonymous", "GET", "/api/v1/status", 401, None),
        ("operator", "GET", "/api/v1/requests", 200, '{"limit": "5"}'),
    ]


def test_short_tokens_are_refused(tmp_path):
    parts = build_components(make_config(tmp_path), "http://127.0.0.1:9", CollectorRegistry())
    with pytest.raises(ValueError, match="at least 16 characters"):
        create_api("short", parts.store, parts.sidecar, parts.aliases)
    parts.close()
