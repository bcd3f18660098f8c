"""Who is calling the control API: one bearer-token parse, a per-client rate limit, secret scrubbing.

The ASGI guard, the routes and the audit log all ask ``Authenticator.actor`` so that the check
and the audited actor can never disagree (e.g. about a lowercase ``bearer`` scheme).

>>> auth = Authenticator("s" * 32)
>>> auth.actor(b"bearer " + b"s" * 32), auth.actor("Bearer \u00e9".encode()), auth.actor(None)
('operator', 'anonymous', 'anonymous')
"""

from __future__ import annotations

import hmac
import re
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping

OPERATOR = "operator"  # one shared token today; per-person tokens would name the person here
FLEET = "fleet"  # sidecars: may read the routing table and report, nothing else
# What the fleet token may call: read the routing table, report what a replica holds.
FLEET_ROUTES = frozenset({("GET", "/api/v1/fleet/routing"), ("POST", "/api/v1/fleet/adapters")})
ANONYMOUS = "anonymous"
REDACTED = "[redacted]"

# Query parameters whose name says "credential" are never stored, whatever their value.
SECRET_NAME = re.compile(
    r"(?i)(token|secret|passw|pwd|auth|credential|api[-_]?key|^key$|session|cookie|signature|^sig$)"
)


def bearer_credentials(header: bytes | None) -> bytes | None:
    """The credentials of an ``Authorization: Bearer …`` header (scheme case-insensitive, RFC 7235)."""
    if not header:
        return None
    scheme, _, credentials = header.strip().partition(b" ")
    if scheme.lower() != b"bearer" or not credentials.strip():
        return None
    return credentials.strip()


class Authenticator:
    """Decides the actor of a call from its raw ``Authorization`` header bytes."""

    def __init__(self, token: str, fleet_token: str | None = None) -> None:
        # Bytes on both sides: compare_digest refuses non-ASCII str, and headers arrive as bytes.
        self._token = token.encode("utf-8")
        self._fleet_token = fleet_token.encode("utf-8") if fleet_token else None
        self._secret_values = {token, *([fleet_token] if fleet_token else [])}

    def actor(self, authorization: bytes | None) -> str:
        credentials = bearer_credentials(authorization)
        if credentials is None:
            return ANONYMOUS
        if hmac.compare_digest(credentials, self._token):
            return OPERATOR
        if self._fleet_token is not None and hmac.compare_digest(credentials, self._fleet_token):
            return FLEET
        return ANONYMOUS

    def scrub(self, params: Iterable[tuple[str, str]]) -> dict[str, str]:
        """Query parameters fit for the audit log: secret-looking names or the token become a mark."""
        kept: dict[str, str] = {}
        for name, value in params:
            secret = SECRET_NAME.search(name) or any(s in value for s in self._secret_values)
            kept[name] = REDACTED if secret else value
        return kept


class RateLimiter:
    """A token bucket per client address, for calls without a valid token.

    The table of clients is bounded: when full, the least recently seen client is forgotten
    (it starts again with a full bucket, which is as generous as a new client would get).
    """

    def __init__(
        self,
        rate_per_s: float,
        burst: int,
        max_clients: int = 4096,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.rate_per_s = rate_per_s
        self.burst = float(burst)
        self.max_clients = max_clients
        self._clock = clock
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def allow(self, client: str) -> bool:
        """Take one token from ``client``'s bucket; False when it is empty (answer 429)."""
        now = self._clock()
        tokens, last = self._buckets.pop(client, (self.burst, now))
        tokens = min(self.burst, tokens + (now - last) * self.rate_per_s)
        allowed = tokens >= 1.0
        self._buckets[client] = (tokens - 1.0 if allowed else tokens, now)
        if len(self._buckets) > self.max_clients:
            self._buckets.popitem(last=False)
        return allowed


def header(headers: Iterable[tuple[bytes, bytes]], name: bytes) -> bytes | None:
    """The first value of a header in an ASGI header list (names are lowercase there)."""
    for key, value in headers:
        if key == name:
            return value
    return None


def client_of(scope: Mapping[str, object]) -> str:
    """The peer address uvicorn saw (the API server never rewrites it from X-Forwarded-For)."""
    client = scope.get("client")
    if isinstance(client, list | tuple) and client:
        return str(client[0])
    return "unknown"
