"""A minimal reverse proxy (raw ASGI + aiohttp, no capture): the floor for a Python proxy design.

    python -m benchmarks.passthrough_proxy --port 18200 --upstream http://127.0.0.1:18000

It forwards method, path, query, headers and body, and streams the upstream's bytes back as they
arrive, untouched. Anything a real sidecar does on top of this is its overhead.
"""

from __future__ import annotations

import argparse
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import aiohttp
import uvicorn

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

# RFC 9110 §7.6.1 connection-specific headers, plus Host and the framing aiohttp recomputes.
_HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "host",
        "content-length",
    }
)
_JSON = [(b"content-type", b"application/json")]
_BAD_GATEWAY = (
    b'{"error":{"message":"upstream unreachable","type":"server_error","param":null,"code":null}}'
)


class PassthroughProxy:
    """ASGI app forwarding every HTTP request to ``upstream_url`` through one aiohttp session."""

    def __init__(self, upstream_url: str, max_connections: int = 512) -> None:
        self.upstream_url = upstream_url.rstrip("/")
        self.max_connections = max_connections
        self.session: aiohttp.ClientSession | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
        elif scope["type"] == "http":
            await self._forward(scope, receive, send)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                self.session = aiohttp.ClientSession(
                    connector=aiohttp.TCPConnector(limit=self.max_connections),
                    timeout=aiohttp.ClientTimeout(total=600, connect=5),
                    auto_decompress=False,
                )
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                if self.session is not None:
                    await self.session.close()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _forward(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.session is None:
            raise RuntimeError("the proxy runs only under a server with lifespan on")
        url = self.upstream_url + scope["path"]
        if scope["query_string"]:
            url += "?" + scope["query_string"].decode("latin-1")
        headers = [
            (k.decode("latin-1"), v.decode("latin-1"))
            for k, v in scope["headers"]
            if k.decode("latin-1") not in _HOP_BY_HOP
        ]
        body = await _read_body(receive)
        started = False
        try:
            async with self.session.request(
                scope["method"], url, headers=headers, data=body
            ) as upstream:
                response_headers = [
                    (k.lower(), v)
                    for k, v in upstream.raw_headers
                    if k.decode("latin-1").lower() not in _HOP_BY_HOP
                ]
                await send(
                    {
                        "type": "http.response.start",
                        "status": upstream.status,
                        "headers": response_headers,
                    }
                )
                started = True
                async for chunk in upstream.content.iter_any():
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})
        except aiohttp.ClientConnectionError:
            if started:
                raise  # the upstream broke mid-answer: let the server abort the connection
            await send({"type": "http.response.start", "status": 502, "headers": _JSON})
            await send({"type": "http.response.body", "body": _BAD_GATEWAY})
            return
        await send({"type": "http.response.body", "body": b""})


async def _read_body(receive: Receive) -> bytes:
    message = await receive()
    body = message.get("body", b"")
    while message.get("more_body"):
        message = await receive()
        body += message.get("body", b"")
    return body


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=18200)
    parser.add_argument("--upstream", default="http://127.0.0.1:18000")
    args = parser.parse_args()
    uvicorn.run(
        PassthroughProxy(args.upstream),
        host=args.host,
        port=args.port,
        loop="uvloop",
        http="httptools",
        lifespan="on",
        access_log=False,
        log_level="warning",
    )


if __name__ == "__main__":
    main()
