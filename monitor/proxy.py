"""The capture proxy: a raw ASGI reverse proxy for the OpenAI API, built on aiohttp's client.

Design choices, measured in ../shared/notes/proxy-overhead.md and benchmarks/proxy_overhead.py:
- raw ASGI rather than a framework, and aiohttp rather than httpx (flat cost as concurrency grows);
- bytes pass through untouched: status, headers and bodies of upstream answers, errors included;
- streams are forwarded event by event as they arrive; only when the sidecar itself asked upstream
  for ``stream_options.include_usage`` does it hold the final usage-only event back from the client;
- capture is fail-open: nothing on the capture side can fail or slow the client's request beyond
  copying bytes into a queue;
- only allowlisted paths are forwarded (monitor/paths.py), client limits are enforced before the
  upstream sees anything (monitor/limits.py), and a broken upstream answer reaches the client
  broken: a whole answer becomes a 502/504, a stream is aborted as the upstream aborted it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, MutableMapping
from typing import Any

import aiohttp
from multidict import CIMultiDict

from monitor.aliases import AliasTable
from monitor.headers import (
    header_value,
    request_headers,
    response_headers,
    upstream_authorization,
)
from monitor.limits import BodyRejectedError, ClientLimits, read_body
from monitor.metrics import DropReason, RejectReason, SidecarMetrics, status_class
from monitor.paths import DEFAULT_FORWARD_PATHS, PathPolicy, normalise_path, upstream_path
from monitor.plan import CapturePlanner, Plan
from monitor.responses import describe_error, send_error, upstream_error_kind
from monitor.sampling import Sampler, TrustedNetworks
from monitor.silence import Silence
from monitor.urls import redact_url, split_credentials
from monitor.usage_events import UsageStripper, stream_complete
from monitor.writer import CaptureWriter

log = logging.getLogger(__name__)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

CAPTURE_ROUTES = {"/v1/chat/completions": "chat_completions", "/v1/completions": "completions"}
OTHER_ROUTE = "other"

_ALLOW = b"GET, POST, DELETE, OPTIONS"


class _UpstreamBrokeError(Exception):
    """The upstream closed or stalled before its answer was complete."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


class OpenAIProxy:
    """ASGI app forwarding allowlisted requests to ``upstream_url``, capturing sampled completions.

    ``upstream_api_key`` (or credentials in ``upstream_url``) replace the client's Authorization
    header on every upstream request, so clients never hold the upstream's key.
    """

    def __init__(
        self,
        upstream_url: str,
        *,
        metrics: SidecarMetrics,
        aliases: AliasTable,
        sampler: Sampler,
        writer: CaptureWriter | None,
        first_byte_timeout_s: float = 600.0,
        idle_timeout_s: float = 60.0,
        connect_timeout_s: float = 5.0,
        max_connections: int = 512,
        max_body_bytes: int = 4_000_000,
        limits: ClientLimits | None = None,
        forward_paths: Iterable[str] = DEFAULT_FORWARD_PATHS,
        trusted_networks: TrustedNetworks | None = None,
        upstream_api_key: str | None = None,
        session_header: str = "",
    ) -> None:
        bare, credentials = split_credentials(upstream_url.rstrip("/"))
        if credentials is not None and upstream_api_key:
            raise ValueError(
                f"upstream {redact_url(upstream_url)} has credentials in its URL and an "
                "upstream_api_key: give one of them"
            )
        self.upstream_url = bare
        self.display_url = redact_url(upstream_url.rstrip("/"))
        self.metrics = metrics
        self.aliases = aliases
        self.sampler = sampler
        self.writer = writer
        self.limits = limits or ClientLimits()
        self._paths = PathPolicy(forward_paths)
        self._trusted = trusted_networks or TrustedNetworks()
        self._upstream_auth = upstream_authorization(upstream_api_key, credentials)
        self._session_header = session_header.lower().encode("latin-1")
        # No total limit: a healthy stream may run for as long as it keeps sending.
        self._timeout = aiohttp.ClientTimeout(total=None, sock_connect=connect_timeout_s)
        self._first_byte_timeout_s = first_byte_timeout_s
        self._idle_timeout_s = idle_timeout_s
        self._max_connections = max_connections
        self._max_body_bytes = max_body_bytes
        self._session: aiohttp.ClientSession | None = None
        self._planner = CapturePlanner(
            aliases,
            sampler,
            metrics,
            capture_enabled=writer is not None,
            max_body_bytes=max_body_bytes,
        )

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
        path = await self._routable_path(scope, send)
        if path is None:
            return
        route = CAPTURE_ROUTES.get(path, OTHER_ROUTE) if scope["method"] == "POST" else OTHER_ROUTE
        try:
            body = await read_body(receive, scope["headers"], self.limits)
        except BodyRejectedError as exc:
            self.metrics.reject(exc.reason)
            # A slow sender is let go; an oversized body is discarded by the server as it comes.
            close = exc.reason is RejectReason.BODY_TIMEOUT
            code = exc.reason.value
            await send_error(
                send, exc.status, str(exc), kind="invalid_request_error", code=code, close=close
            )
            return
        if body is None:
            self.metrics.client_disconnects.labels(route=route).inc()
            return
        headers, capture_header = request_headers(
            scope["headers"], capture_route=route != OTHER_ROUTE, authorization=self._upstream_auth
        )
        if capture_header is not None and not self._trusted.trusts(scope.get("client")):
            capture_header = None
        plan = Plan(route=route, body=body)
        if route != OTHER_ROUTE:
            session = (
                header_value(scope["headers"], self._session_header)
                if self._session_header
                else None
            )
            self._planner.plan(plan, capture_header, started_wall, session)
            if plan.exchange is not None:
                plan.exchange.session_header = session
        url = self.upstream_url + upstream_path(path, scope["path"], scope.get("raw_path"))
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
            if not stream_complete(plan.chunks):
                self.metrics.client_disconnects.labels(route=route).inc()
                if plan.exchange is not None:
                    plan.exchange.error = "client_disconnected"
        finally:
            watch.stop()
            self._finish(plan, started)
            self.metrics.in_flight.dec()

    async def _routable_path(self, scope: Scope, send: Send) -> str | None:
        """The normalised path when it may be forwarded; otherwise answer locally, return None."""
        path: str = scope["path"]
        if not path.startswith("/"):
            # `OPTIONS *` asks about the server itself: the sidecar answers, nothing goes upstream.
            self.metrics.reject(RejectReason.ASTERISK_FORM)
            if scope["method"] == "OPTIONS" and path == "*":
                await send(
                    {"type": "http.response.start", "status": 204, "headers": [(b"allow", _ALLOW)]}
                )
                await send({"type": "http.response.body", "body": b""})
            else:
                message = f"driftloop: request target {path!r} is not a path"
                await send_error(
                    send, 400, message, kind="invalid_request_error", code="bad_target"
                )
            return None
        path = normalise_path(path)
        if self._paths.allows(path):
            return path
        self.metrics.reject(RejectReason.PATH_NOT_ALLOWED)
        message = (
            f"driftloop: {scope['method']} {path} is not forwarded (see sidecar.forward_paths)"
        )
        await send_error(send, 404, message, kind="invalid_request_error", code="path_not_allowed")
        return None

    async def _exchange(
        self,
        method: str,
        url: str,
        headers: CIMultiDict[str],
        plan: Plan,
        send: Send,
        started: float,
    ) -> float:
        """Forward the request and relay the answer; returns the seconds spent upstream."""
        if self._session is None:
            raise RuntimeError("OpenAIProxy.startup() was not awaited")
        upstream_started = time.perf_counter()
        try:
            # Time to first byte (the headers); after that only silence between chunks is limited.
            async with asyncio.timeout(self._first_byte_timeout_s):
                response = await self._session.request(
                    method,
                    url,
                    headers=headers,
                    data=plan.body,
                    allow_redirects=False,
                    skip_auto_headers=("Accept-Encoding", "User-Agent", "Content-Type"),
                )
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            kind = upstream_error_kind(exc)
            detail = f"{kind.replace('_', ' ')}: {describe_error(exc)}"
            if type(exc) is TimeoutError:
                detail = (
                    "timeout: no response headers within sidecar.first_byte_timeout_s "
                    f"({self._first_byte_timeout_s:g} s)"
                )
            await self._fail(send, plan, started, kind, detail)
            return time.perf_counter() - upstream_started
        plan.status = response.status
        try:
            if response.content_type == "text/event-stream":
                await self._relay_stream(response, plan, send, started, upstream_started)
            else:
                await self._relay_whole(response, plan, send, started, upstream_started)
        finally:
            response.close()  # on cancel this drops the connection, which aborts the upstream request
        return time.perf_counter() - upstream_started

    async def _relay_whole(
        self,
        response: aiohttp.ClientResponse,
        plan: Plan,
        send: Send,
        started: float,
        upstream_started: float,
    ) -> None:
        """Read a whole answer, count and queue it, then send it; a broken one becomes 502/504.

        Nothing reaches the client before the last byte arrived, so a break can still be
        answered with a clean error instead of a truncated body.
        """
        chunks: list[bytes] = []
        try:
            async with self._upstream_body() as silence:
                while chunk := await response.content.readany():
                    silence.heard()
                    chunks.append(chunk)
        except _UpstreamBrokeError as exc:
            self.metrics.broken_responses.labels(route=plan.route).inc()
            if plan.exchange is not None:
                plan.chunks = chunks
            await self._fail(send, plan, started, exc.kind, f"broke mid-response: {exc}")
            return
        body = b"".join(chunks)
        if plan.exchange is not None:
            plan.exchange.ttft_s = time.perf_counter() - started
            plan.chunks = [body]
        headers = response_headers(response, keep_length=True)
        self.metrics.upstream_latency.labels(route=plan.route).observe(
            time.perf_counter() - upstream_started
        )
        # With a content-length, the last byte ends the response for the client: queue first.
        self._finish(plan, started)
        await send({"type": "http.response.start", "status": response.status, "headers": headers})
        await send({"type": "http.response.body", "body": body, "more_body": False})

    async def _relay_stream(
        self,
        response: aiohttp.ClientResponse,
        plan: Plan,
        send: Send,
        started: float,
        upstream_started: float,
    ) -> None:
        """Relay SSE events as they come; a broken stream is aborted, not ended cleanly."""
        headers = response_headers(response, keep_length=not plan.strip_usage_event)
        await send({"type": "http.response.start", "status": response.status, "headers": headers})
        exchange = plan.exchange
        captured = plan.chunks = [] if exchange is not None else None
        if exchange is not None:
            exchange.stream = True  # what the upstream did, whatever truthy `stream` asked for it
        events = UsageStripper() if plan.strip_usage_event else None
        try:
            async with self._upstream_body() as silence:
                while chunk := await response.content.readany():
                    silence.heard()
                    if captured is not None:
                        if not captured and exchange is not None:
                            exchange.ttft_s = time.perf_counter() - started
                        captured.append(chunk)
                    out = chunk if events is None else events.feed(chunk)
                    if out:
                        silence.pause()  # a slow client is not a silent upstream
                        await send({"type": "http.response.body", "body": out, "more_body": True})
                        silence.resume()
        except _UpstreamBrokeError as exc:
            self.metrics.upstream_errors.labels(kind=exc.kind).inc()
            self.metrics.broken_responses.labels(route=plan.route).inc()
            if exchange is not None:
                exchange.error = f"upstream broke mid-stream: {exc}"
            self._finish(plan, started)
            # Returning without the final body message makes uvicorn close the connection without
            # the terminating chunk: the client's SDK raises, as it would have directly.
            return
        if events is not None and (tail := events.flush()):
            await send({"type": "http.response.body", "body": tail, "more_body": True})
        self.metrics.upstream_latency.labels(route=plan.route).observe(
            time.perf_counter() - upstream_started
        )
        # Count and queue the capture before the stream's HTTP body ends.
        self._finish(plan, started)
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    @contextlib.asynccontextmanager
    async def _upstream_body(self) -> AsyncIterator[Silence]:
        """The block that reads an upstream body: a close or a silence becomes a broken answer."""
        try:
            async with Silence(self._idle_timeout_s) as silence:
                yield silence
        except TimeoutError:
            raise _UpstreamBrokeError(
                "timeout", f"nothing for sidecar.idle_timeout_s ({self._idle_timeout_s:g} s)"
            ) from None
        except aiohttp.ClientError as exc:
            raise _UpstreamBrokeError("protocol_error", describe_error(exc)) from None

    async def _fail(self, send: Send, plan: Plan, started: float, kind: str, detail: str) -> None:
        """Answer 502 (504 for a timeout) with an OpenAI-style body; count and capture it."""
        self.metrics.upstream_errors.labels(kind=kind).inc()
        plan.status = 504 if kind == "timeout" else 502
        if plan.exchange is not None:
            plan.exchange.error = f"upstream: {detail}"
        self._finish(plan, started)
        message = f"driftloop: upstream {self.display_url} {detail}"
        await send_error(send, plan.status, message, kind="upstream_error", code=kind)

    def _finish(self, plan: Plan, started: float) -> None:
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
