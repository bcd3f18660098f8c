"""Nothing the control API is asked skips the audit: bad names, bad text and crashing routes."""

import json

import httpx
import pytest
from fastapi import APIRouter
from prometheus_client import CollectorRegistry

from driftloop.api.audit import AuditLog, AuditMetrics
from driftloop.schema import MIGRATIONS
from monitor.store import Store
from tests.hardening.api_running import running_api


def crashing_router() -> APIRouter:
    router = APIRouter(prefix="/api/v1/test")

    @router.post("/crash")
    def crash() -> None:
        raise RuntimeError("the route broke")

    @router.get("/crash-async")
    async def crash_async() -> None:
        raise KeyError("missing")

    return router


def test_a_route_that_raises_is_a_json_500_and_audited(tmp_path):
    with running_api(tmp_path, routers=[crashing_router()]) as api:
        with api.client() as client:
            sync = client.post("/api/v1/test/crash?limit=3", headers=api.auth)
            asynchronous = client.get("/api/v1/test/crash-async", headers=api.auth)
            after = client.get("/api/v1/status", headers=api.auth)
        assert (sync.status_code, sync.json()) == (500, {"detail": "internal error: RuntimeError"})
        assert (asynchronous.status_code, asynchronous.json()) == (
            500,
            {"detail": "internal error: KeyError"},
        )
        assert after.status_code == 200  # the server survived both
        rows = {r["path"]: r for r in api.audit()}
        crash = rows["/api/v1/test/crash"]
        assert (crash["actor"], crash["status_code"]) == ("operator", 500)
        assert crash["detail"] == {"limit": "3", "error": "RuntimeError: the route broke"}
        assert rows["/api/v1/test/crash-async"]["status_code"] == 500


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/api/v1/adapters/a..b/promote", {"reason": "x"}),
        ("/api/v1/adapters/a..b/veto", {"reason": "x"}),
        ("/api/v1/models/support/pin", {"adapter_id": "a..b", "reason": "x"}),
        ("/api/v1/models/a..b/pause", {"reason": "x"}),
        ("/api/v1/retrain", {"model": "a..b", "reason": "x"}),
    ],
)
def test_dot_dot_names_are_422_and_audited(tmp_path, path, body):
    with running_api(tmp_path) as api:
        reply = httpx.post(api.url + path, json=body, headers=api.auth)
        assert reply.status_code == 422, reply.text
        [row] = [r for r in api.audit() if r["path"] == path]
        assert row["status_code"] == 422


@pytest.mark.parametrize("field", ["prompt", "answer", "request_id"])
def test_a_lone_surrogate_in_feedback_is_422_naming_the_field(tmp_path, field):
    body = {"model": "support", "prompt": "p", "answer": "a", field: "bad \ud800 text"}
    with running_api(tmp_path) as api:
        reply = httpx.post(
            api.url + "/api/v1/feedback",
            content=json.dumps(body),  # json.dumps escapes it as \ud800, valid JSON
            headers={**api.auth, "Content-Type": "application/json"},
        )
        assert reply.status_code == 422, reply.text
        [error] = reply.json()["detail"]
        assert error["loc"][-1] == field, error  # pydantic refuses it; the 422 must render
        [row] = [r for r in api.audit() if r["path"] == "/api/v1/feedback"]
        assert row["status_code"] == 422
        assert api.rows("SELECT count(*) FROM feedback")[0][0] == 0


def test_a_body_that_is_not_json_is_400_and_audited(tmp_path):
    with running_api(tmp_path) as api:
        reply = httpx.post(
            api.url + "/api/v1/feedback",
            content=b'{"model": "support", "prompt": NaN, "answer": "\xff"}',
            headers={**api.auth, "Content-Type": "application/json"},
        )
        assert reply.status_code == 400, reply.text
        [row] = [r for r in api.audit() if r["path"] == "/api/v1/feedback"]
        assert row["status_code"] == 400


def test_a_failing_audit_store_keeps_the_rows_and_counts_the_failure(tmp_path):
    registry = CollectorRegistry()
    store = Store.open(tmp_path / "audit.duckdb", migrations=MIGRATIONS)
    audit = AuditLog(store, AuditMetrics(registry))
    store.close()  # every append now fails
    audit.record("operator", "127.0.0.1", "GET", "/api/v1/status", 200)
    audit.record("anonymous", "127.0.0.1", "GET", "/api/v1/status", 429, aggregate=True)
    assert audit.flush(force=True) == 0
    assert registry.get_sample_value("driftloop_audit_write_errors_total") == 1
    assert registry.get_sample_value("driftloop_audit_pending_rows") == 2  # kept for a retry
