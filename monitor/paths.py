"""Which request paths the proxy forwards, and the one spelling of a path it routes on.

The sidecar stands in front of vLLM for any client, but vLLM also serves admin endpoints
(runtime LoRA loading, cache resets, sleep, ``collective_rpc``) that only driftloop's own audited
calls may use. So the proxy forwards an allowlist of inference and read-only paths and answers
everything else itself. Paths are matched after RFC 3986 dot-segment removal on the decoded path,
and that same normalised path is what goes upstream: what is routed, captured and counted is what
the upstream serves.

>>> normalise_path("/v1/x/../chat/completions")
'/v1/chat/completions'
>>> PathPolicy(["/v1/models", "/v1/responses/*"]).allows("/v1/responses/resp_1/cancel")
True
"""

from __future__ import annotations

from collections.abc import Iterable
from urllib.parse import quote

# vLLM's OpenAI-compatible inference and read-only endpoints. Not listed, so refused: LoRA admin
# (/v1/load_lora_adapter, /v1/unload_lora_adapter), /reset_prefix_cache, /reset_mm_cache, /sleep,
# /wake_up, /collective_rpc, /start_profile, /stop_profile, /scale_elastic_ep, and /invocations
# (SageMaker's dispatcher, which would reach completions under a path that is not captured).
DEFAULT_FORWARD_PATHS = (
    "/v1/chat/completions",
    "/v1/completions",
    "/v1/embeddings",
    "/v1/responses",
    "/v1/responses/*",
    "/v1/models",
    "/v1/score",
    "/v1/rerank",
    "/rerank",
    "/v2/rerank",
    "/pooling",
    "/classify",
    "/v1/audio/transcriptions",
    "/v1/audio/translations",
    "/tokenize",
    "/detokenize",
    "/health",
    "/ping",
    "/version",
)

# Characters that stay literal when the normalised path is re-encoded for the upstream request.
_PATH_SAFE = "/:@!$&'()*+,;=-._~"


def normalise_path(path: str) -> str:
    """RFC 3986 §5.2.4 remove_dot_segments on a decoded absolute path."""
    if "." not in path:
        return path
    out: list[str] = []
    segments = path.split("/")
    for segment in segments[1:]:
        if segment == "..":
            if out:
                out.pop()
        elif segment != ".":
            out.append(segment)
    # A trailing "." or ".." names a directory, so the result keeps its trailing slash.
    if segments[-1] in (".", ".."):
        out.append("")
    return "/" + "/".join(out)


def encode_path(path: str) -> str:
    """The decoded path percent-encoded again for the request line sent upstream."""
    return quote(path, safe=_PATH_SAFE)


class PathPolicy:
    """Exact paths, plus ``prefix/*`` entries that allow anything below ``prefix/``."""

    def __init__(self, paths: Iterable[str]) -> None:
        exact: set[str] = set()
        prefixes: list[str] = []
        for entry in paths:
            if not entry.startswith("/"):
                raise ValueError(f"forwarded path {entry!r} must start with '/'")
            if entry.endswith("/*"):
                prefixes.append(entry[:-1])
            else:
                exact.add(entry)
        self._exact = frozenset(exact)
        self._prefixes = tuple(prefixes)

    def allows(self, path: str) -> bool:
        return path in self._exact or (bool(self._prefixes) and path.startswith(self._prefixes))


def upstream_path(path: str, decoded: str, raw: bytes | None) -> str:
    """The client's own bytes when they are already canonical, else the normalised ``path``."""
    if raw and path == decoded and b"%" not in raw:
        return raw.decode("latin-1")
    return encode_path(path)
