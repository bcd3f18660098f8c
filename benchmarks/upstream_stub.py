"""A fast OpenAI-compatible upstream with canned answers, for proxy benchmarks and tests.

    python -m benchmarks.upstream_stub --port 18000

``POST /v1/chat/completions`` answers a ~600-byte ``chat.completion`` with usage, or, when the
request has ``"stream": true``, 20 ``chat.completion.chunk`` events (one short word each) and
``data: [DONE]``. With ``stream_options.include_usage`` a usage-only chunk (``"choices": []``)
comes just before ``[DONE]`` and the other chunks carry no ``usage`` key, as vLLM sends them.
``GET /v1/models`` and ``GET /health`` answer too. The ``model`` of the request is echoed.

Request headers turn on knobs for tests (the path without them stays as fast as possible):
``x-stub-status: 429`` answers that status with an OpenAI-style error body,
``x-stub-chunk-delay-ms: 50`` sleeps that long between stream events,
``x-stub-first-byte-delay-ms: 500`` waits that long before the response headers, and
``x-stub-fault: close`` or ``stall`` breaks the answer after ``x-stub-fault-after`` stream events
(default 3), or half-way through a whole answer (then sent chunked): ``close`` drops the connection
without the terminating chunk, ``stall`` sends nothing more until the client goes away.
``x-stub-echo: 1`` on any method and path answers 200 with what arrived, as JSON: ``method``,
``path``, ``raw_path``, ``query``, ``headers`` (name -> value) and ``body`` (bytes as latin-1).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import threading
import time
from collections.abc import Awaitable, Callable, Iterator, MutableMapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import uvicorn

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

DEFAULT_MODEL = "stub-model"
CREATED = 1_700_000_000
COMPLETION_ID = "chatcmpl-stub0123456789abcdef"
STREAM_WORDS = (
    *("The", "quick", "brown", "fox", "jumps", "over", "the", "lazy", "dog", "while"),
    *("seven", "small", "birds", "sing", "softly", "in", "the", "warm", "morning", "light"),
)
ANSWER = (
    "To reset your password, open Settings, choose Security, then Reset password. "
    "Follow the link we email you; it stays valid for thirty minutes. If the email "
    "never arrives, check the spam folder or ask an administrator for help. Accounts "
    "with two-factor login also need the code from your authenticator app to finish."
)
USAGE = {"prompt_tokens": 42, "completion_tokens": 48, "total_tokens": 90}
STREAM_USAGE = {"prompt_tokens": 42, "completion_tokens": 20, "total_tokens": 62}

_SSE_HEADERS = [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")]
_DONE = b"data: [DONE]\n\n"


def _dump(obj: object) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


@lru_cache(maxsize=256)
def completion_body(model: str) -> bytes:
    """The non-streaming answer for ``model``, encoded once."""
    return _dump(
        {
            "id": COMPLETION_ID,
            "object": "chat.completion",
            "created": CREATED,
            "model": model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": ANSWER},
                    "logprobs": None,
                    "finish_reason": "stop",
                }
            ],
            "usage": USAGE,
        }
    )


@lru_cache(maxsize=256)
def stream_events(model: str, include_usage: bool) -> tuple[bytes, ...]:
    """The SSE events of a streamed answer for ``model``, ``[DONE]`` included, encoded once."""
    events = []
    last = len(STREAM_WORDS) - 1
    for i, word in enumerate(STREAM_WORDS):
        delta = {"role": "assistant", "content": word} if i == 0 else {"content": " " + word}
        chunk = {
            "id": COMPLETION_ID,
            "object": "chat.completion.chunk",
            "created": CREATED,
            "model": model,
            "choices": [
                {
                    "index": 0,
                    "delta": delta,
                    "logprobs": None,
                    "finish_reason": "stop" if i == last else None,
                }
            ],
        }
        events.append(b"data: " + _dump(chunk) + b"\n\n")
    if include_usage:
        usage_chunk = {
            "id": COMPLETION_ID,
            "object": "chat.completion.chunk",
            "created": CREATED,
            "model": model,
            "choices": [],
            "usage": STREAM_USAGE,
        }
        events.append(b"data: " + _dump(usage_chunk) + b"\n\n")
    events.append(_DONE)
    return tuple(events)


def error_body(status: int, message: str) -> bytes:
    """An OpenAI-style error object."""
    if status == 429:
        kind, code = "rate_limit_error", "rate_limit_exceeded"
    elif status >= 500:
        kind, code = "server_error", None
    else:
        kind, code = "invalid_request_error", None
    return _dump({"error": {"message": message, "type": kind, "param": None, "code": code}})


_HEALTH = b"{}"
_MODELS_BODY = _dump(
    {
        "object": "list",
        "data": [{"id": DEFAULT_MODEL, "object": "model", "created": CREATED, "owned_by": "stub"}],
    }
)


async def respond(send: Send, status: int, body: bytes) -> None:
    """Send one complete JSON response."""
    headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def _read_body(receive: Receive) -> bytes:
    message = await receive()
    body = message.get("body", b"")
    while message.get("more_body"):
        message = await receive()
        body += message.get("body", b"")
    return body


async def _disconnected_within(receive: Receive, seconds: float) -> bool:
    """Wait ``seconds``, or less if the client goes away first (then True)."""
    try:
        message = await asyncio.wait_for(receive(), seconds)
    except TimeoutError:
        return False
    return bool(message["type"] == "http.disconnect")


class StubFaultError(Exception):
    """Raised after the response started: uvicorn then drops the connection mid-body."""


@dataclass(frozen=True)
class _Faults:
    delay_s: float = 0.0  # between stream events
    first_byte_s: float = 0.0
    fault: str = ""  # "", "close" or "stall"
    after: int = 3  # stream events sent before the fault

    @classmethod
    def parse(cls, knobs: dict[bytes, bytes]) -> _Faults:
        fault = knobs.get(b"x-stub-fault", b"").decode()
        if fault not in ("", "close", "stall"):
            raise ValueError(f"x-stub-fault must be close or stall, not {fault!r}")
        return cls(
            delay_s=int(knobs.get(b"x-stub-chunk-delay-ms", 0)) / 1000,
            first_byte_s=int(knobs.get(b"x-stub-first-byte-delay-ms", 0)) / 1000,
            fault=fault,
            after=int(knobs.get(b"x-stub-fault-after", 3)),
        )


_NO_FAULTS = _Faults()


async def _break(receive: Receive, fault: str) -> None:
    if fault == "stall":
        while not await _disconnected_within(receive, 3600):
            pass
        return
    raise StubFaultError("x-stub-fault: close")


async def _stream(send: Send, receive: Receive, events: tuple[bytes, ...], faults: _Faults) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": _SSE_HEADERS})
    for i, event in enumerate(events):
        if faults.fault and i == faults.after:
            await _break(receive, faults.fault)
            return
        await send({"type": "http.response.body", "body": event, "more_body": True})
        if faults.delay_s and await _disconnected_within(receive, faults.delay_s):
            return
    await send({"type": "http.response.body", "body": b""})


async def _whole_with_fault(send: Send, receive: Receive, body: bytes, fault: str) -> None:
    """Half of ``body`` sent chunked (no content-length), then the fault."""
    headers = [(b"content-type", b"application/json")]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body[: len(body) // 2], "more_body": True})
    await _break(receive, fault)


async def _echo(scope: Scope, receive: Receive, send: Send) -> None:
    body = await _read_body(receive)
    seen = {
        "method": scope["method"],
        "path": scope["path"],
        "raw_path": scope.get("raw_path", b"").decode("latin-1"),
        "query": scope.get("query_string", b"").decode("latin-1"),
        "headers": {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]},
        "body": body.decode("latin-1"),
    }
    await respond(send, 200, _dump(seen))


async def _chat(scope: Scope, receive: Receive, send: Send) -> None:
    knobs = {k: v for k, v in scope["headers"] if k.startswith(b"x-stub-")}
    body = await _read_body(receive)
    try:
        request = json.loads(body)
        if not isinstance(request, dict):
            raise ValueError("the body is not a JSON object")
        status = int(knobs.get(b"x-stub-status", 200))
        faults = _Faults.parse(knobs) if knobs else _NO_FAULTS
        options = request.get("stream_options")
        if options is not None and not isinstance(options, dict):
            raise ValueError("stream_options must be an object")  # as vLLM's validation says
    except ValueError as exc:
        await respond(send, 400, error_body(400, f"bad request: {exc}"))
        return
    if faults.first_byte_s and await _disconnected_within(receive, faults.first_byte_s):
        return
    if status != 200:
        await respond(send, status, error_body(status, f"stub answered {status} as asked"))
        return
    model = str(request.get("model") or DEFAULT_MODEL)
    if not request.get("stream"):
        if faults.fault:
            await _whole_with_fault(send, receive, completion_body(model), faults.fault)
        else:
            await respond(send, 200, completion_body(model))
        return
    include_usage = bool(options and options.get("include_usage"))
    await _stream(send, receive, stream_events(model, include_usage), faults)


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    """The ASGI app (HTTP only; run it with lifespan off)."""
    method, path = scope["method"], scope["path"]
    if any(name == b"x-stub-echo" for name, _ in scope["headers"]):
        await _echo(scope, receive, send)
    elif method == "POST" and path == "/v1/chat/completions":
        await _chat(scope, receive, send)
    elif method == "GET" and path == "/health":
        await respond(send, 200, _HEALTH)
    elif method == "GET" and path == "/v1/models":
        await respond(send, 200, _MODELS_BODY)
    else:
        await respond(send, 404, error_body(404, f"no route {method} {path}"))


def server_config(host: str, port: int) -> uvicorn.Config:
    """One uvloop + httptools worker, no access log, no lifespan."""
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        loop="uvloop",
        http="httptools",
        lifespan="off",
        access_log=False,
        log_level="warning",
    )


class ThreadedStub(uvicorn.Server):
    """The stub's uvicorn server running in a daemon thread."""

    thread: threading.Thread

    def stop(self, timeout_s: float = 10.0) -> None:
        """Ask the server to exit and wait for its thread."""
        self.should_exit = True
        self.thread.join(timeout_s)


def start_stub_in_thread(
    host: str = "127.0.0.1", port: int = 0, timeout_s: float = 10.0
) -> tuple[ThreadedStub, int]:
    """Start the stub in a background thread; returns the server (``.stop()`` it) and its port."""
    server = ThreadedStub(server_config(host, port))
    server.thread = threading.Thread(target=server.run, name="upstream-stub", daemon=True)
    server.thread.start()
    deadline = time.monotonic() + timeout_s
    while not server.started:
        if not server.thread.is_alive() or time.monotonic() > deadline:
            server.stop()
            raise RuntimeError(f"the upstream stub did not start on {host}:{port}")
        time.sleep(0.01)
    return server, server.servers[0].sockets[0].getsockname()[1]


@contextlib.contextmanager
def running_stub(host: str = "127.0.0.1") -> Iterator[int]:
    """Context manager form of ``start_stub_in_thread``: yields the port, stops on exit."""
    server, port = start_stub_in_thread(host)
    try:
        yield port
    finally:
        server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=18000)
    args = parser.parse_args()
    uvicorn.Server(server_config(args.host, args.port)).run()


if __name__ == "__main__":
    main()
