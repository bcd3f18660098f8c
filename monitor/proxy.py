"""The capture proxy: a raw ASGI reverse proxy for the OpenAI API, built on aiohttp's client.

Design choices, measured in ../shared/notes/proxy-overhead.md and benchmarks/proxy_overhead.py:
- raw ASGI rather than a framework, and aiohttp rather than httpx (flat cost as concurrency grows);
- bytes pass through untouched: status, headers and bodies of upstream answers, errors included;
- streams are forwarded event by event as they arrive; only when the sidecar itself asked upstream
  for ``stream_options.include_usage`` does it hold the final usage-only event back from the client;
- capture is fail-open: nothing on the capture side can fail or slow the client's request beyond
  copying bytes into a queue.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
import uuid
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from typing import Any

import aiohttp
import orjson
from multidict import CIMultiDict

from monitor.aliases import AliasTable
from monitor.capture import CapturedExchange, is_usage_only_event
from monitor.metrics import DropReason, SidecarMetrics, status_class
from monitor.sampling import CAPTURE_HEADER, Decision, Sampler
from monitor.writer import CaptureWriter

log = logging.getLogger(__name__)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

CAPTURE_ROUTES = {"/v1/chat/completions": "chat_completions", "/v1/completions": "completions"}
OTHER_ROUTE = "other"

# RFC 9110 §7.6.1 connection-specific headers, plus those the proxy recomputes.
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
_EVENT_END = re.compile(rb"\r\n\r\n|\n\n|\r\r")


@dataclass(slots=True)
class _Plan:
    """What the proxy will do with one request after reading its body."""

    route: str
    body: bytes
    exchange: CapturedExchange | None = None
    strip_usage_event: bool = False
    finished: bool = False
    chunks: list[bytes] | None = None  # response bytes as received, when capturing
    status: int = 0  # the upstream's status, once its headers arrived


class OpenAIProxy:
    """ASGI app forwarding every request to ``upstream_url`` and capturing sampled completions."""

    def __init__(
        self,
        upstream_url: str,
        *,
        metrics: SidecarMetrics,
        aliases: AliasTable,
        sampler: Sampler,
        writer: CaptureWriter | None,
        timeout_s: float = 600.0,
        connect_timeout_s: float = 5.0,
        max_connections: int = 512,
        max_body_bytes: int = 4_000_000,
    ) -> None:
        self.upstream_url = upstream_url.rstrip("/")
        self.metrics = metrics
        self.aliases = aliases
        self.sampler = sampler
        self.writer = writer
        self._timeout = aiohttp.ClientTimeout(total=timeout_s, sock_connect=connect_timeout_s)
        self._max_connections = max_connections
        self._max_body_bytes = max_body_bytes
        self._session: aiohttp.ClientSession | None = None

    async def startup(self) -> None:
        connector = aiohttp.TCPConnector(limit=self._max_connections, limit_per_host=0)
        # auto_decompress=False keeps upstream bytes verbatim; cookies are the client's business.
        self._session = aiohttp.ClientSession(
            connector=connector,
            timeout=self._timeout,
            auto_decompress=False,
            cookie_jar=aiohttp.DummyCookieJar(),
        )

    async def shutdown(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = time.perf_counter()
        started_wall = time.time()
        path = scope["path"]
        route = CAPTURE_ROUTES.get(path, OTHER_ROUTE) if scope["method"] == "POST" else OTHER_ROUTE
        body = await _read_body(receive)
        if body is None:
            self.metrics.client_disconnects.labels(route=route).inc()
            return
        headers = _request_headers(scope["headers"], capture_route=route != OTHER_ROUTE)
        plan = _Plan(route=route, body=body)
        if route != OTHER_ROUTE:
            self._plan_capture(plan, headers.pop(CAPTURE_HEADER, None), started_wall)

        url = self.upstream_url + (scope.get("raw_path") or path.encode()).decode("latin-1")
        if scope.get("query_string"):
            url += "?" + scope["query_string"].decode("latin-1")

        watch = _DisconnectWatch(receive, asyncio.current_task())
        self.metrics.in_flight.inc()
        try:
            upstream_s = await self._exchange(scope["method"], url, headers, plan, send, started)
            self.metrics.overhead.labels(route=route).observe(
                max(0.0, time.perf_counter() - started - upstream_s)
            )
        except asyncio.CancelledError:
            if not watch.disconnected:
                raise
            # SDKs close the connection as soon as they read `data: [DONE]`; that is an ending.
            if not _stream_complete(plan.chunks):
                self.metrics.client_disconnects.labels(route=route).inc()
                if plan.exchange is not None:
                    plan.exchange.error = "client_disconnected"
        finally:
            watch.stop()
            self._finish(plan, started)
            self.metrics.in_flight.dec()

    def _plan_capture(self, plan: _Plan, header: str | None, started_wall: float) -> None:
        """Apply the alias table and sampling; rewrite the body only when something changes."""
        try:
            payload = orjson.loads(plan.body)
        except orjson.JSONDecodeError:
            return  # not JSON: upstream answers with its own 400, passed through verbatim
        if not isinstance(payload, dict):
            return
        model = payload.get("model") if isinstance(payload.get("model"), str) else None
        served = self.aliases.resolve(model)
        changed = served != model
        if changed:
            payload["model"] = served
        decision = (
            Decision.SAMPLED_OUT if self.writer is None else self.sampler.decide(model, header)
        )
        self.metrics.capture_decisions.labels(
            model=self.aliases.label(model), decision=decision
        ).inc()
        stream = payload.get("stream") is True
        if decision.captures:
            if len(plan.body) > self._max_body_bytes:
                self.metrics.drop(DropReason.TOO_LARGE)
            else:
                plan.exchange = CapturedExchange(
                    request_id=uuid.uuid4().hex,
                    started_at=started_wall,
                    route=plan.route,
                    model_alias=model,
                    served_model=served,
                    stream=stream,
                    request_body=plan.body,
                )
                options = payload.get("stream_options")
                if stream and not (isinstance(options, dict) and options.get("include_usage")):
                    payload["stream_options"] = {**(options or {}), "include_usage": True}
                    plan.strip_usage_event = changed = True
        if changed:
            plan.body = orjson.dumps(payload)

    async def _exchange(
        self,
        method: str,
        url: str,
        headers: CIMultiDict[str],
        plan: _Plan,
        send: Send,
        started: float,
    ) -> float:
        """Forward the request and relay the answer; returns the seconds spent upstream."""
        if self._session is None:
            raise RuntimeError("OpenAIProxy.startup() was not awaited")
        upstream_started = time.perf_counter()
        try:
            response = await self._session.request(
                method,
                url,
                headers=headers,
                data=plan.body,
                allow_redirects=False,
                skip_auto_headers=("Accept-Encoding", "User-Agent", "Content-Type"),
            )
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            upstream_s = time.perf_counter() - upstream_started
            kind = _error_kind(exc)
            self.metrics.upstream_errors.labels(kind=kind).inc()
            plan.status = 504 if kind == "timeout" else 502
            if plan.exchange is not None:
                plan.exchange.error = f"upstream: {type(exc).__name__}: {exc}"
            self._finish(plan, started)
            await self._send_upstream_error(send, plan.status, kind, exc)
            return upstream_s
        plan.status = response.status
        try:
            await send(
                {
                    "type": "http.response.start",
                    "status": response.status,
                    "headers": _response_headers(response, plan),
                }
            )
            exchange = plan.exchange
            if response.content_type != "text/event-stream":
                # A whole answer: read it, then count and queue it before the client can see its
                # last byte (with a content-length, that byte ends the response for the client).
                body = await response.read()
                if exchange is not None:
                    exchange.ttft_s = time.perf_counter() - started
                    plan.chunks = [body]
                upstream_s = time.perf_counter() - upstream_started
                self.metrics.upstream_latency.labels(route=plan.route).observe(upstream_s)
                self._finish(plan, started)
                await send({"type": "http.response.body", "body": body, "more_body": False})
                return upstream_s
            captured = plan.chunks = [] if exchange is not None else None
            first = True
            events = _UsageStripper() if plan.strip_usage_event else None
            async for chunk in response.content.iter_any():
                if first and exchange is not None:
                    exchange.ttft_s = time.perf_counter() - started
                    first = False
                if captured is not None:
                    captured.append(chunk)
                out = chunk if events is None else events.feed(chunk)
                if out:
                    await send({"type": "http.response.body", "body": out, "more_body": True})
            if events is not None and (tail := events.flush()):
                await send({"type": "http.response.body", "body": tail, "more_body": True})
            upstream_s = time.perf_counter() - upstream_started
        except (aiohttp.ClientError, TimeoutError) as exc:
            # The upstream broke mid-response: headers are gone, so end the body and record it.
            upstream_s = time.perf_counter() - upstream_started
            self.metrics.upstream_errors.labels(kind=_error_kind(exc)).inc()
            plan.chunks = None
            if plan.exchange is not None:
                plan.exchange.error = f"upstream broke mid-response: {type(exc).__name__}: {exc}"
        finally:
            response.close()  # on cancel this drops the connection, which aborts the upstream request
        self.metrics.upstream_latency.labels(route=plan.route).observe(upstream_s)
        # Count and queue the capture before the stream's HTTP body ends.
        self._finish(plan, started)
        await send({"type": "http.response.body", "body": b"", "more_body": False})
        return upstream_s

    async def _send_upstream_error(
        self, send: Send, status: int, kind: str, exc: BaseException
    ) -> None:
        """Answer 502 (unreachable) or 504 (timeout) with an OpenAI-style error body."""
        message = f"driftloop: upstream {self.upstream_url} {kind.replace('_', ' ')}: {exc}"
        body = json.dumps(
            {"error": {"message": message, "type": "upstream_error", "param": None, "code": kind}}
        ).encode()
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body, "more_body": False})

    def _finish(self, plan: _Plan, started: float) -> None:
        """Count the request and hand its capture to the writer, once; never raises."""
        if plan.finished:
            return
        plan.finished = True
        self.metrics.requests.labels(route=plan.route, status_class=status_class(plan.status)).inc()
        exchange = plan.exchange
        if exchange is None or self.writer is None:
            return
        if plan.chunks is not None:
            exchange.response_body = b"".join(plan.chunks)
        exchange.latency_s = time.perf_counter() - started
        exchange.status_code = plan.status
        try:
            if len(exchange.response_body) > self._max_body_bytes:
                self.metrics.drop(DropReason.TOO_LARGE)
                return
            self.writer.submit(exchange)
        except Exception:  # capture must never break traffic
            log.exception("capture submit failed")
            self.metrics.drop(DropReason.CAPTURE_ERROR)


class _UsageStripper:
    """Withholds the usage-only SSE event that the sidecar asked for and the client did not.

    vLLM moves ``system_fingerprint`` from the terminal chunks to the usage chunk when usage is
    requested. To keep the client's stream identical to the one it would have got directly,
    terminal chunks are held until the usage chunk arrives (it follows at once) and the
    fingerprint is put back as their last key, where vLLM writes it.
    """

    def __init__(self) -> None:
        self._buffer = b""
        self._held: list[bytes] = []

    def feed(self, chunk: bytes) -> bytes:
        data = self._buffer + chunk
        out: list[bytes] = []
        start = 0
        for match in _EVENT_END.finditer(data):
            event = data[start : match.end()]
            start = match.end()
            if is_usage_only_event(event):
                out.extend(_with_fingerprint(e, _fingerprint(event)) for e in self._held)
                self._held = []
            elif self._held or (_TERMINAL.search(event) and b'"system_fingerprint"' not in event):
                self._held.append(event)
            else:
                out.append(event)
        self._buffer = data[start:]
        return b"".join(out)

    def flush(self) -> bytes:
        rest, self._buffer = self._buffer, b""
        held, self._held = self._held, []
        return b"".join(held) + (b"" if is_usage_only_event(rest) else rest)


_TERMINAL = re.compile(rb'"finish_reason":\s*"')


def _fingerprint(usage_event: bytes) -> str | None:
    for line in usage_event.splitlines():
        if line.startswith(b"data:"):
            try:
                value = json.loads(line[5:]).get("system_fingerprint")
            except (ValueError, AttributeError):
                return None
            return value if isinstance(value, str) else None
    return None


def _with_fingerprint(event: bytes, fingerprint: str | None) -> bytes:
    if fingerprint is None or not _TERMINAL.search(event):
        return event
    end = event.rfind(b"}")
    if end < 0:
        return event
    field = b',"system_fingerprint":' + json.dumps(fingerprint).encode()
    return event[:end] + field + event[end:]


def _stream_complete(chunks: list[bytes] | None) -> bool:
    if not chunks:
        return False
    return b"".join(chunks[-2:]).rstrip().endswith(b"data: [DONE]")


async def _read_body(receive: Receive) -> bytes | None:
    """The whole request body, or None when the client left before sending it."""
    parts = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        parts.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(parts)


class _DisconnectWatch:
    """Cancels the handler task, and so the upstream request, when the client goes away.

    Once the response is complete the server also reports ``http.disconnect``; ``stop()`` is
    called before that can be mistaken for a client leaving.
    """

    def __init__(self, receive: Receive, handler: asyncio.Task[Any] | None) -> None:
        self.disconnected = False
        self._stopped = False
        self._receive = receive
        self._handler = handler
        self._task = asyncio.ensure_future(self._watch())

    async def _watch(self) -> None:
        message = await self._receive()
        if message["type"] == "http.disconnect" and not self._stopped and self._handler is not None:
            self.disconnected = True
            self._handler.cancel()

    def stop(self) -> None:
        self._stopped = True
        self._task.cancel()


def _request_headers(raw: list[tuple[bytes, bytes]], *, capture_route: bool) -> CIMultiDict[str]:
    headers: CIMultiDict[str] = CIMultiDict()
    for name, value in raw:
        key = name.decode("latin-1").lower()
        if key in _HOP_BY_HOP:
            continue
        # Captured bodies are parsed later, so ask for them uncompressed; other paths pass as-is.
        if capture_route and key == "accept-encoding":
            continue
        headers.add(key, value.decode("latin-1"))
    return headers


def _response_headers(response: aiohttp.ClientResponse, plan: _Plan) -> list[tuple[bytes, bytes]]:
    keep_length = not plan.strip_usage_event
    return [
        (name, value)
        for name, value in response.raw_headers
        if name.lower() not in _HOP_BY_HOP or (keep_length and name.lower() == b"content-length")
    ]


def _error_kind(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError | aiohttp.ServerTimeoutError):
        return "timeout"
    if isinstance(exc, aiohttp.ClientConnectorError | ConnectionRefusedError):
        return "unreachable"
    return "protocol_error"
