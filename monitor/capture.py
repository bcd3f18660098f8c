"""What one captured exchange is, and how its raw bytes become a ``requests`` row.

The proxy only collects bytes on the hot path; parsing JSON bodies and assembling streamed
chunks happens here, in the row builder process (``monitor.row_builder``) or, without one, in the
writer thread, so that capture costs the traffic as little as possible.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.compute as pc

from monitor.jsonbody import loads_for_storage
from monitor.redaction import redact_json

Redact = Callable[[str], str]

REQUESTS_SCHEMA = pa.schema(
    [
        ("request_id", pa.string()),
        ("started_at", pa.timestamp("us", tz="UTC")),
        ("route", pa.string()),
        ("model_alias", pa.string()),
        ("served_model", pa.string()),
        ("stream", pa.bool_()),
        ("request_json", pa.string()),
        ("prompt_text", pa.string()),
        ("response_text", pa.string()),
        ("finish_reason", pa.string()),
        ("prompt_tokens", pa.int32()),
        ("completion_tokens", pa.int32()),
        ("status_code", pa.int32()),
        ("latency_s", pa.float64()),
        ("ttft_s", pa.float64()),
        ("upstream_id", pa.string()),
        ("error", pa.string()),
        ("session_key", pa.string()),
    ]
)


@dataclass(slots=True)
class CapturedExchange:
    """Raw facts about one proxied request, collected on the hot path without parsing."""

    request_id: str
    started_at: float  # unix seconds
    route: str
    model_alias: str | None
    served_model: str | None
    stream: bool
    request_body: bytes
    status_code: int = 0
    response_body: bytes = b""  # whole body, or the SSE bytes as received for streams
    latency_s: float | None = None
    ttft_s: float | None = None
    error: str | None = None
    session_header: str | None = None  # the configured session header's value, when sent


@dataclass(slots=True)
class _Assembled:
    text: str | None = None
    finish_reason: str | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    upstream_id: str | None = None


def to_row(exchange: CapturedExchange, redact: Redact) -> dict[str, Any]:
    """Turn an exchange into a ``requests`` row; bodies that do not parse still yield a row."""
    request = _loads(exchange.request_body)
    if (
        exchange.stream
        and exchange.status_code == 200
        and exchange.response_body.lstrip()[:5] == b"data:"
    ):
        assembled = assemble_stream(exchange.response_body)
    else:
        assembled = assemble_body(_loads(exchange.response_body))
    prompt = prompt_text(request) if isinstance(request, dict) else None
    return {
        "request_id": exchange.request_id,
        "started_at": exchange.started_at,  # unix seconds; rows_to_arrow makes it a timestamp
        "route": exchange.route,
        "model_alias": exchange.model_alias,
        "served_model": exchange.served_model,
        "stream": exchange.stream,
        "request_json": redact_json(exchange.request_body, redact),  # escaped secrets too
        "prompt_text": _redacted(prompt, redact),
        "response_text": _redacted(assembled.text, redact),
        "finish_reason": assembled.finish_reason,
        "prompt_tokens": assembled.prompt_tokens,
        "completion_tokens": assembled.completion_tokens,
        "status_code": exchange.status_code,
        "latency_s": exchange.latency_s,
        "ttft_s": exchange.ttft_s,
        "upstream_id": assembled.upstream_id,
        "error": exchange.error,
        "session_key": session_key(
            request, exchange.model_alias, redact, header=exchange.session_header
        ),
    }


# A session key is a digest, never the text it comes from. It is taken over the redacted text,
# so it tells nothing that the stored (redacted) rows do not: a digest of a short secret could be
# reversed by guessing.
SESSION_KEY_BYTES = 12


def _keep(text: str) -> str:
    return text


def session_key(
    request: Any, alias: str | None, redact: Redact = _keep, *, header: str | None = None
) -> str | None:
    """The conversation a request belongs to, so drift can permute whole conversations.

    The configured session header (``capture.session_header``) wins when the client sent it
    (``h:`` + digest); then the OpenAI ``user`` field (``u:`` + digest). Otherwise a chat's
    key is a digest of its messages up to and including the *first* user turn (``c:``): every
    later turn of one conversation resends that opening, so all its turns share a key, while the
    history before the last user turn would change at every turn. Completions and unparseable
    bodies get None (each row is then its own session).
    """
    if header:
        return "h:" + _digest([alias, redact(header)])
    if not isinstance(request, dict):
        return None
    user = request.get("user")
    if isinstance(user, str) and user:
        return "u:" + _digest([alias, redact(user)])
    messages = request.get("messages")
    if not isinstance(messages, list):
        return None
    opening: list[Any] = []
    for message in messages:
        if not isinstance(message, dict):
            continue
        text = _content_text(message.get("content"))
        opening.append([message.get("role"), None if text is None else redact(text)])
        if message.get("role") == "user":
            return "c:" + _digest([alias, opening])
    return None


def _digest(value: Any) -> str:
    return hashlib.blake2b(orjson.dumps(value), digest_size=SESSION_KEY_BYTES).hexdigest()


def prompt_text(request: dict[str, Any]) -> str | None:
    """The text drift is measured on: the last user turn of a chat, or the completion prompt."""
    messages = request.get("messages")
    if isinstance(messages, list):
        for message in reversed(messages):
            if isinstance(message, dict) and message.get("role") == "user":
                return _content_text(message.get("content"))
        return None
    prompt = request.get("prompt")
    if isinstance(prompt, str):
        return prompt
    if isinstance(prompt, list) and prompt and all(isinstance(p, str) for p in prompt):
        return "\n".join(prompt)
    return None  # token-id prompts carry no text


def assemble_body(body: Any) -> _Assembled:
    """Read text, finish reason, usage and id from a non-streamed (chat) completion."""
    out = _Assembled()
    if not isinstance(body, dict):
        return out
    out.upstream_id = body.get("id") if isinstance(body.get("id"), str) else None
    _read_usage(body.get("usage"), out)
    choices = body.get("choices")
    if isinstance(choices, list) and choices and isinstance(choices[0], dict):
        first = choices[0]
        message = first.get("message")
        if isinstance(message, dict):
            out.text = _content_text(message.get("content"))
        elif isinstance(first.get("text"), str):
            out.text = first["text"]
        out.finish_reason = first.get("finish_reason")
    return out


def assemble_stream(raw: bytes) -> _Assembled:
    """Concatenate the first choice's deltas of an SSE stream and read its final usage chunk."""
    out = _Assembled()
    parts: list[str] = []
    for line in raw.splitlines():
        if not line.startswith(b"data:"):
            continue
        data = line[5:].strip()
        if data == b"[DONE]":
            break
        chunk = _loads(data)
        if not isinstance(chunk, dict):
            continue
        if out.upstream_id is None and isinstance(chunk.get("id"), str):
            out.upstream_id = chunk["id"]
        _read_usage(chunk.get("usage"), out)
        for choice in chunk.get("choices") or ():
            if not isinstance(choice, dict) or choice.get("index", 0) != 0:
                continue
            delta = choice.get("delta")
            piece = delta.get("content") if isinstance(delta, dict) else choice.get("text")
            if isinstance(piece, str):
                parts.append(piece)
            if choice.get("finish_reason"):
                out.finish_reason = choice["finish_reason"]
    out.text = "".join(parts)
    return out


def is_usage_only_event(event: bytes) -> bool:
    """True for the final ``choices: []`` chunk that carries only usage (cheap test first)."""
    if b'"usage"' not in event or b'"choices"' not in event:
        return False
    for line in event.splitlines():
        if line.startswith(b"data:"):
            chunk = _loads(line[5:].strip())
            return (
                isinstance(chunk, dict) and chunk.get("choices") == [] and bool(chunk.get("usage"))
            )
    return False


def rows_to_arrow(rows: list[dict[str, Any]]) -> pa.Table:
    """Build the Arrow batch column by column (about twice as fast as row dicts)."""
    columns: dict[str, pa.Array] = {}
    for field in REQUESTS_SCHEMA:
        values = [row[field.name] for row in rows]
        if field.name == "started_at":
            micros = pc.cast(pc.round(pc.multiply(pa.array(values, pa.float64()), 1e6)), pa.int64())
            columns[field.name] = micros.cast(field.type)
        else:
            columns[field.name] = pa.array(values, field.type)
    return pa.Table.from_pydict(columns, schema=REQUESTS_SCHEMA)


def _read_usage(usage: Any, out: _Assembled) -> None:
    if isinstance(usage, dict):
        if isinstance(usage.get("prompt_tokens"), int):
            out.prompt_tokens = usage["prompt_tokens"]
        if isinstance(usage.get("completion_tokens"), int):
            out.completion_tokens = usage["completion_tokens"]


def _content_text(content: Any) -> str | None:
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # multi-part content: keep the text parts
        texts = [p.get("text") for p in content if isinstance(p, dict) and p.get("type") == "text"]
        return "\n".join(t for t in texts if isinstance(t, str))
    return None


def _redacted(text: str | None, redact: Redact) -> str | None:
    return None if text is None else redact(text)


def _loads(data: bytes) -> Any:
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        return loads_for_storage(data)  # NaN, lone surrogates: what vLLM itself accepts
