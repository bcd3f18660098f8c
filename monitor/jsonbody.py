"""JSON request bodies as vLLM reads them, which is more than orjson accepts.

orjson refuses ``NaN``/``Infinity`` and lone surrogate escapes (``"\\ud800"``), and reads integers
beyond 64 bits as floats (a rewritten body would change them); Python's json (and so vLLM's
pydantic) reads all of them exactly. Such a body must still be aliased, captured and counted, so it
is parsed, and written back, with the stdlib.
"""

from __future__ import annotations

import json
import re
from typing import Any

import orjson

NOT_JSON = object()
# 20 digits may exceed 64 bits; such bodies (rare) take the exact, slower parser.
_LONG_DIGITS = re.compile(rb"\d{20}")


def loads(data: bytes) -> tuple[Any, bool]:
    """``(value, strict)``: strict when orjson read it; ``(NOT_JSON, False)`` when nothing did."""
    if _LONG_DIGITS.search(data) is None:
        try:
            return orjson.loads(data), True
        except orjson.JSONDecodeError:
            pass
    try:
        return json.loads(data), False
    except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
        return NOT_JSON, False


def dumps(value: Any, strict: bool) -> bytes:
    """Serialise a body read by ``loads`` so that it means what the client sent."""
    if strict:
        return orjson.dumps(value)
    # ensure_ascii keeps lone surrogates as escapes; NaN stays NaN, as the client wrote it.
    return json.dumps(value, separators=(",", ":")).encode()


def loads_for_storage(data: bytes) -> Any:
    """Like ``loads`` (None when not JSON), with lone surrogates replaced: Arrow needs UTF-8."""
    value, strict = loads(data)
    if value is NOT_JSON:
        return None
    return value if strict else _valid_text(value)


def _valid_text(value: Any) -> Any:
    if isinstance(value, str):
        return value.encode("utf-8", "replace").decode("utf-8")
    if isinstance(value, list):
        return [_valid_text(v) for v in value]
    if isinstance(value, dict):
        return {_valid_text(k): _valid_text(v) for k, v in value.items()}
    return value
