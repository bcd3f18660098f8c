"""The sidecar ASGI app: the proxy plus ``/metrics`` and ``/healthz``, with startup and shutdown."""

from __future__ import annotations

import json
import logging
from typing import Any

from prometheus_client import make_asgi_app

from monitor.limits import guarded_protocol
from monitor.proxy import OpenAIProxy, Receive, Scope, Send
from monitor.writer import CaptureWriter

log = logging.getLogger(__name__)

METRICS_PATH = "/metrics"
HEALTH_PATH = "/healthz"


class Sidecar:
    """Routes ``/metrics`` and ``/healthz`` to the sidecar itself and everything else upstream."""

    def __init__(self, proxy: OpenAIProxy, writer: CaptureWriter | None) -> None:
        self.proxy = proxy
        self.writer = writer
        self._metrics_app = make_asgi_app(registry=proxy.metrics.registry)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            path = scope["path"]
            if path == METRICS_PATH:
                await self._metrics_app(scope, receive, send)
            elif path == HEALTH_PATH:
                await self._health(send)
            else:
                await self.proxy(scope, receive, send)
        elif kind == "lifespan":
            await self._lifespan(receive, send)

    def server_options(self) -> dict[str, Any]:
        """uvicorn settings that enforce the client limits: connection cap, header size and time."""
        limits = self.proxy.limits
        return {
            "http": guarded_protocol(limits, self.proxy.metrics.reject),
            "timeout_keep_alive": limits.keep_alive_timeout_s,
            # Trust (x-driftloop-capture) is decided on the TCP peer, never on a forwarded header.
            "proxy_headers": False,
        }

    def health(self) -> dict[str, Any]:
        # Capture problems never fail the sidecar (traffic flows), but they are named here.
        capture, capture_error = ("disabled", None) if self.writer is None else self.writer.status()
        return {
            "status": "ok",
            "capture": capture,
            "capture_error": capture_error,
            "upstream": self.proxy.display_url,  # credentials redacted
        }

    async def _health(self, send: Send) -> None:
        body = json.dumps(self.health()).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"application/json")],
            }
        )
        await send({"type": "http.response.body", "body": body})

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    await self.proxy.startup()
                    if self.writer is not None:
                        self.writer.start()
                except Exception as exc:
                    log.exception("sidecar startup failed")
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.proxy.shutdown()
                if self.writer is not None:
                    self.writer.close()  # flushes what is queued
                await send({"type": "lifespan.shutdown.complete"})
                return
