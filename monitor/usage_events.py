"""SSE stream surgery: hold back the usage-only event the sidecar asked for and the client did not."""

from __future__ import annotations

import json
import re

from monitor.capture import is_usage_only_event

_EVENT_END = re.compile(rb"\r\n\r\n|\n\n|\r\r")
_TERMINAL = re.compile(rb'"finish_reason":\s*"')


class UsageStripper:
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


def stream_complete(chunks: list[bytes] | None) -> bool:
    """True when the SSE bytes so far end with ``data: [DONE]``."""
    if not chunks:
        return False
    return b"".join(chunks[-2:]).rstrip().endswith(b"data: [DONE]")


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
