"""The control API: bearer-token protected, loopback by default, every call audited.

It is also how other processes read the DuckDB file this service owns (DuckDB admits one process
per file), e.g. ``driftloop requests`` while the service runs.
"""

from __future__ import annotations

import hmac
import json
from collections.abc import Awaitable, Callable, Sequence
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, HTTPException, Query, Request, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from judges.judgments import recent_judgments
from monitor.aliases import AliasTable
from monitor.drift_report import latest_runs
from monitor.sidecar import Sidecar
from monitor.store import Store

# Annotations are resolved from module globals (PEP 563), so dependencies used in them live here.
BEARER = HTTPBearer(auto_error=False)
ACTOR = "operator"  # one shared token today; per-person tokens would name the person here


def create_api(
    token: str,
    store: Store | None,
    sidecar: Sidecar,
    aliases: AliasTable,
    routers: Sequence[APIRouter] = (),
) -> FastAPI:
    """Build the control API app around the running sidecar's components (plus extra routers)."""
    if len(token) < 16:
        raise ValueError("the control API token must be at least 16 characters")

    def require_token(
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(BEARER)],
    ) -> None:
        if credentials is None or not hmac.compare_digest(credentials.credentials, token):
            raise HTTPException(
                status_code=401,
                detail="missing or wrong bearer token",
                headers={"WWW-Authenticate": "Bearer"},
            )

    # Every route requires the token; the OpenAPI page is switched off for the same reason.
    app = FastAPI(
        title="driftloop control API",
        version="1",
        dependencies=[Depends(require_token)],
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )

    @app.middleware("http")
    async def audit(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        response = await call_next(request)
        if store is not None:
            authorized = hmac.compare_digest(
                request.headers.get("authorization", ""), f"Bearer {token}"
            )
            # routes that change something put what they were asked into request.state.audit
            asked = {**request.query_params, **getattr(request.state, "audit", {})}
            detail = json.dumps(asked, default=str) if asked else None
            store.query(
                "INSERT INTO audit_log (actor, client, method, path, status_code, detail)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                [
                    ACTOR if authorized else "anonymous",
                    request.client.host if request.client else None,
                    request.method,
                    request.url.path,
                    response.status_code,
                    detail,
                ],
            )
        return response

    @app.get("/api/v1/status")
    def status() -> dict[str, Any]:
        """Health of the sidecar, the alias table, and how much has been captured."""
        captured = None
        if store is not None:
            row = store.query("SELECT count(*), max(started_at) FROM requests")[0]
            captured = {"rows": row[0], "last_at": row[1].isoformat() if row[1] else None}
        return {"sidecar": sidecar.health(), "aliases": aliases.snapshot(), "captured": captured}

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
        """The most recent control API calls, newest first."""
        if store is None:
            raise HTTPException(status_code=503, detail="the capture store is not open")
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
    return app


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
