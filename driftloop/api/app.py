"""The control API: bearer-token protected, loopback by default, every call audited.

It is also how other processes read the DuckDB file this service owns (DuckDB admits one process
per file), e.g. ``driftloop requests`` while the service runs.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, HTTPException, Query, Request, Response
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.security import HTTPBearer
from prometheus_client import CollectorRegistry
from starlette.exceptions import HTTPException as StarletteHTTPException

from driftloop.api.audit import AuditLog, AuditMetrics
from driftloop.api.auth import FLEET, OPERATOR, Authenticator, RateLimiter
from driftloop.api.guard import ApiGuard
from judges.judgments import recent_judgments
from monitor.aliases import AliasTable
from monitor.drift_report import latest_runs
from monitor.sidecar import Sidecar
from monitor.store import Store

# Annotations are resolved from module globals (PEP 563), so dependencies used in them live here.
# The scheme only documents the token in the OpenAPI page; ApiGuard decides who the caller is.
BEARER = HTTPBearer(auto_error=False, description="the control API token")
OPENAPI_URL = "/api/v1/openapi.json"


def _guarded(request: Request) -> None:
    """Fail closed should the app ever be served without ApiGuard in front of it."""
    # ApiGuard lets the fleet actor reach its routes (FLEET_ROUTES) only.
    if request.scope.get("state", {}).get("actor") not in (OPERATOR, FLEET):
        raise HTTPException(401, "missing or wrong bearer token")


class AsciiJSONResponse(JSONResponse):
    """JSON with non-ASCII escaped: a lone surrogate echoed from a request must not crash it."""

    def render(self, content: Any) -> bytes:
        return json.dumps(content, allow_nan=False, separators=(",", ":")).encode("ascii")


async def _invalid(request: Request, exc: Exception) -> JSONResponse:
    errors = exc.errors() if isinstance(exc, RequestValidationError) else []
    return AsciiJSONResponse({"detail": jsonable_encoder(errors)}, status_code=422)


async def _http_error(request: Request, exc: Exception) -> Response:
    if not isinstance(exc, StarletteHTTPException):
        raise exc
    headers = getattr(exc, "headers", None)
    return AsciiJSONResponse({"detail": exc.detail}, exc.status_code, headers=headers)


async def _internal_error(request: Request, exc: Exception) -> JSONResponse:
    # ApiGuard audits the exception; the client gets JSON like every other answer.
    return AsciiJSONResponse({"detail": f"internal error: {type(exc).__name__}"}, 500)


def create_api(
    token: str,
    store: Store | None,
    sidecar: Sidecar | None,
    aliases: AliasTable,
    routers: Sequence[APIRouter] = (),
    *,
    fleet_token: str | None = None,
    registry: CollectorRegistry | None = None,
    unauthenticated_rate_per_s: float = 5.0,
    unauthenticated_burst: int = 20,
) -> ApiGuard:
    """Build the control API (FastAPI behind ``ApiGuard``) around the running sidecar's parts."""
    if len(token) < 16:
        raise ValueError("the control API token must be at least 16 characters")
    audit = AuditLog(store, AuditMetrics(registry or CollectorRegistry()))

    # Every route requires the token (ApiGuard); the OpenAPI document too, so it is served.
    app = FastAPI(
        title="driftloop control API",
        version="1",
        dependencies=[Depends(BEARER), Depends(_guarded)],
        docs_url=None,
        redoc_url=None,
        openapi_url=OPENAPI_URL,
        default_response_class=AsciiJSONResponse,
    )
    app.add_exception_handler(RequestValidationError, _invalid)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(Exception, _internal_error)

    @app.get("/api/v1/status")
    def status() -> dict[str, Any]:
        """Health of the sidecar, the alias table, and how much has been captured."""
        captured = None
        if store is not None:
            row = store.query("SELECT count(*), max(started_at) FROM requests")[0]
            captured = {"rows": row[0], "last_at": row[1].isoformat() if row[1] else None}
        health = sidecar.health() if sidecar is not None else {"role": "controller"}
        return {"sidecar": health, "aliases": aliases.snapshot(), "captured": captured}

    @app.get("/api/v1/requests")
    def recent_requests(
        limit: Annotated[int, Query(ge=1, le=1000)] = 20,
        model: Annotated[str | None, Query(max_length=200)] = None,
    ) -> list[dict[str, Any]]:
        """The most recent captured exchanges, newest first."""
        if store is None:
            raise HTTPException(status_code=503, detail="the capture store is not open")
        return recent_rows(store, limit=limit, model=model)

    @app.get("/api/v1/drift/latest")
    def drift_latest() -> list[dict[str, Any]]:
        """The newest evaluation of every (model, signal), with per-cluster details."""
        if store is None:
            raise HTTPException(status_code=503, detail="the capture store is not open")
        return latest_runs(store)

    @app.get("/api/v1/audit")
    def audit_log(limit: Annotated[int, Query(ge=1, le=1000)] = 50) -> list[dict[str, Any]]:
        """The most recent control API calls, newest first (calls buffered so far included)."""
        if store is None:
            raise HTTPException(status_code=503, detail="the capture store is not open")
        audit.flush(force=True)
        cur = store.cursor()
        cur.execute(
            "SELECT id, occurred_at, actor, client, method, path, status_code, detail FROM audit_log"
            " ORDER BY id DESC LIMIT ?",
            [limit],
        )
        return _records(cur)

    @app.get("/api/v1/judgments")
    def judgments(
        limit: Annotated[int, Query(ge=1, le=1000)] = 50,
        model: Annotated[str | None, Query(max_length=200)] = None,
        judge: Annotated[str | None, Query(max_length=200)] = None,
    ) -> list[dict[str, Any]]:
        """The most recent judge verdicts (scores, unparseable, errors, budget stops), newest first."""
        if store is None:
            raise HTTPException(status_code=503, detail="the capture store is not open")
        return recent_judgments(store, limit=limit, model=model, judge=judge)

    for router in routers:
        app.include_router(router)
    limiter = RateLimiter(unauthenticated_rate_per_s, unauthenticated_burst)
    return ApiGuard(app, Authenticator(token, fleet_token), audit, limiter)


REQUEST_SUMMARY_COLUMNS = (
    "request_id, started_at, route, model_alias, served_model, stream, prompt_text, response_text,"
    " finish_reason, prompt_tokens, completion_tokens, status_code, latency_s, ttft_s, error"
)


def recent_rows(store_or_cursor: Any, *, limit: int, model: str | None) -> list[dict[str, Any]]:
    """Newest captured rows; shared by the API and the CLI's direct-file fallback."""
    cur = store_or_cursor.cursor()
    where, params = ("WHERE model_alias = ?", [model]) if model else ("", [])
    cur.execute(
        f"SELECT {REQUEST_SUMMARY_COLUMNS} FROM requests {where} ORDER BY started_at DESC LIMIT ?",
        [*params, limit],
    )
    return _records(cur)


def _records(cur: Any) -> list[dict[str, Any]]:
    names = [d[0] for d in cur.description]
    rows = []
    for values in cur.fetchall():
        row = dict(zip(names, values, strict=True))
        for key, value in row.items():
            if hasattr(value, "isoformat"):
                row[key] = value.isoformat()
        rows.append(row)
    return rows
