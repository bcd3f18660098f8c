"""Raw ASGI in front of the control API: authenticate, rate-limit, audit every call, never crash.

A call without a valid token is answered here, before FastAPI parses anything, so a flood of
them costs one header comparison each; beyond a per-client rate they get 429 and are audited as
one folded row. Authenticated calls go to FastAPI; whatever happens there (a 4xx, an exception
in a route) is audited with the status the client saw, and an exception becomes a JSON 500.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Awaitable, Callable, MutableMapping, Sequence
from typing import Any
from urllib.parse import parse_qsl

from driftloop.api.audit import AuditLog
from driftloop.api.auth import (
    ANONYMOUS,
    FLEET,
    FLEET_ROUTES,
    Authenticator,
    RateLimiter,
    client_of,
    header,
)

log = logging.getLogger(__name__)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

UNAUTHORIZED = {"detail": "missing or wrong bearer token"}
RATE_LIMITED = {"detail": "too many calls without a valid token from this client; slow down"}
FORBIDDEN = {"detail": "the fleet token may only read the routing table and report adapters"}


class ApiGuard:
    """The control API as served: ``app`` (FastAPI) behind the token check and the audit log."""

    def __init__(
        self,
        app: ASGIApp,
        auth: Authenticator,
        audit: AuditLog,
        limiter: RateLimiter,
        flush_interval_s: float = 1.0,
    ) -> None:
        self.app = app
        self.auth = auth
        self.audit = audit
        self.limiter = limiter
        self.flush_interval_s = flush_interval_s
        self._flusher: asyncio.Task[None] | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(scope, receive, send)
        elif scope["type"] == "http":
            self._start_flusher()
            await self._http(scope, receive, send)
        else:  # websockets: the API has none; refuse without reading anything
            await send({"type": "websocket.close", "code": 1008})

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        actor = self.auth.actor(header(scope["headers"], b"authorization"))
        client, method, path = client_of(scope), scope["method"], scope["path"]
        query = self.auth.scrub(
            parse_qsl(scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True)
        )
        if actor == ANONYMOUS:
            if not self.limiter.allow(client):
                self.audit.metrics.rejected.labels(reason="rate_limited").inc()
                self.audit.record(actor, client, method, path, 429, aggregate=True)
                retry = str(max(1, round(1 / self.limiter.rate_per_s)))
                await _json(send, 429, RATE_LIMITED, [(b"retry-after", retry.encode())])
                return
            self.audit.metrics.rejected.labels(reason="unauthorized").inc()
            self.audit.record(actor, client, method, path, 401, query)
            await _json(send, 401, UNAUTHORIZED, [(b"www-authenticate", b"Bearer")])
            return
        if actor == FLEET and (method, path) not in FLEET_ROUTES:
            self.audit.record(actor, client, method, path, 403, query)
            await _json(send, 403, FORBIDDEN)
            return
        state = scope.setdefault("state", {})
        state["actor"] = actor
        status = {"code": 500, "started": False}

        async def send_and_note(message: Message) -> None:
            if message["type"] == "http.response.start":
                status["code"], status["started"] = message["status"], True
            await send(message)

        error = None
        try:
            await self.app(scope, receive, send_and_note)
        except Exception as exc:  # audited below; the client gets a JSON 500, not a reset
            log.exception("control API %s %s failed", method, path)
            error = f"{type(exc).__name__}: {exc}"[:300]
            status["code"] = 500
            if not status["started"]:
                await _json(send, 500, {"detail": f"internal error: {type(exc).__name__}"})
        finally:
            detail = {**query, **state.get("audit", {})}
            if error is not None:
                detail["error"] = error
            self.audit.record(actor, client, method, path, int(status["code"]), detail)

    async def _lifespan(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def send_and_flush(message: Message) -> None:
            if message["type"] == "lifespan.shutdown.complete":
                await self._stop_flusher()
            await send(message)

        await self.app(scope, receive, send_and_flush)

    def _start_flusher(self) -> None:
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.get_running_loop().create_task(self._flush_forever())

    async def _flush_forever(self) -> None:
        while True:
            await asyncio.sleep(self.flush_interval_s)
            if self.audit.due():
                # off this loop's thread too: the API keeps answering while DuckDB writes
                await asyncio.to_thread(self.audit.flush)

    async def _stop_flusher(self) -> None:
        if self._flusher is not None:
            self._flusher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._flusher
        await asyncio.to_thread(self.audit.flush, True)


async def _json(
    send: Send, status: int, body: dict[str, Any], headers: Sequence[tuple[bytes, bytes]] = ()
) -> None:
    payload = json.dumps(body).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(payload)).encode()),
                *headers,
            ],
        }
    )
    await send({"type": "http.response.body", "body": payload})
