"""Headers across the proxy: what goes upstream, what comes back, and whose credentials count."""

from __future__ import annotations

import base64

import aiohttp
from multidict import CIMultiDict

from monitor.sampling import CAPTURE_HEADER

# RFC 9110 §7.6.1 connection-specific headers, plus those the proxy recomputes.
HOP_BY_HOP = frozenset(
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


def request_headers(
    raw: list[tuple[bytes, bytes]], *, capture_route: bool, authorization: str | None
) -> tuple[CIMultiDict[str], str | None]:
    """Headers to send upstream, and the capture header, which never leaves the sidecar.

    ``authorization`` (the upstream's own credential) replaces whatever the client sent.
    """
    headers: CIMultiDict[str] = CIMultiDict()
    capture: str | None = None
    for name, value in raw:
        key = name.decode("latin-1").lower()
        if key in HOP_BY_HOP:
            continue
        if key == CAPTURE_HEADER:
            capture = value.decode("latin-1")
            continue
        if authorization is not None and key == "authorization":
            continue
        # Captured bodies are parsed later, so ask for them uncompressed; other paths pass as-is.
        if capture_route and key == "accept-encoding":
            continue
        headers.add(key, value.decode("latin-1"))
    if authorization is not None:
        headers["authorization"] = authorization
    return headers, capture


MAX_SESSION_HEADER_CHARS = 256  # a session id, not a payload: longer values are cut


def header_value(raw: list[tuple[bytes, bytes]], name: bytes) -> str | None:
    """The first value of header ``name`` (lower case), at most 256 characters; None if absent."""
    for key, value in raw:
        if key.lower() == name:
            return value[:MAX_SESSION_HEADER_CHARS].decode("latin-1") or None
    return None


def response_headers(
    response: aiohttp.ClientResponse, *, keep_length: bool
) -> list[tuple[bytes, bytes]]:
    """The upstream's response headers minus hop-by-hop ones (content-length kept on request)."""
    return [
        (name, value)
        for name, value in response.raw_headers
        if name.lower() not in HOP_BY_HOP or (keep_length and name.lower() == b"content-length")
    ]


def upstream_authorization(api_key: str | None, credentials: tuple[str, str] | None) -> str | None:
    """``Bearer <key>``, or HTTP Basic from credentials in the upstream URL, or None."""
    if api_key:
        return f"Bearer {api_key}"
    if credentials is not None:
        token = base64.b64encode(f"{credentials[0]}:{credentials[1]}".encode()).decode()
        return f"Basic {token}"
    return None
