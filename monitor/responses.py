"""Answers the sidecar gives itself, shaped like OpenAI errors so SDKs raise the usual classes."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import aiohttp

from monitor.urls import redact_url

Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]


def error_body(message: str, kind: str, code: str | None) -> bytes:
    """``{"error": {"message", "type", "param", "code"}}`` as the OpenAI API writes it."""
    error = {"message": message, "type": kind, "param": None, "code": code}
    return json.dumps({"error": error}).encode()


async def send_error(
    send: Send, status: int, message: str, *, kind: str, code: str | None, close: bool = False
) -> None:
    """Send a whole JSON error response; ``close`` ends the connection after it."""
    body = error_body(message, kind, code)
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
    ]
    if close:
        headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body, "more_body": False})


def raw_error(status: int, reason: str, message: str, code: str) -> bytes:
    """A complete HTTP/1.1 error response, for the protocol layer that has no ASGI ``send``."""
    body = error_body(message, "invalid_request_error", code)
    head = (
        f"HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
    )
    return head.encode() + body


def describe_error(exc: BaseException) -> str:
    """``Type: message`` with any URL credentials redacted (messages may quote the URL)."""
    text = redact_url(str(exc))
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def upstream_error_kind(exc: BaseException) -> str:
    """``timeout``, ``unreachable`` or ``protocol_error``: the label of upstream error counts."""
    if isinstance(exc, TimeoutError | aiohttp.ServerTimeoutError):
        return "timeout"
    if isinstance(exc, aiohttp.ClientConnectorError | ConnectionRefusedError):
        return "unreachable"
    return "protocol_error"
