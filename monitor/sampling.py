"""Which requests get captured: a rate per model, overridable per request by a header.

The header steers what driftloop learns from (``skip`` hides traffic from drift detection and
retraining, ``force`` bypasses sampling and fills the store), so it is honoured only from trusted
networks: by default loopback, where the operator's own tools (replays, golden-set runs, the demo)
run. From anyone else it is stripped and ignored.
"""

from __future__ import annotations

import ipaddress
import random
from collections.abc import Callable, Iterable, Mapping
from enum import StrEnum

# Own generator: sampling never moves the global `random` state others may have seeded.
_RNG = random.Random()

CAPTURE_HEADER = "x-driftloop-capture"
LOOPBACK_NETWORKS = ("127.0.0.0/8", "::1/128")


class SampleDecision(StrEnum):
    FORCED = "forced"
    SKIPPED = "skipped"
    SAMPLED_IN = "sampled_in"
    SAMPLED_OUT = "sampled_out"

    @property
    def captures(self) -> bool:
        return self in (SampleDecision.FORCED, SampleDecision.SAMPLED_IN)


class Sampler:
    """Decides capture per request; ``x-driftloop-capture: force|skip`` beats the rates.

    >>> Sampler(0.0, {"support": 1.0}).decide("support", None)
    <SampleDecision.SAMPLED_IN: 'sampled_in'>
    """

    def __init__(
        self,
        default_rate: float,
        rates: Mapping[str, float] | None = None,
        rng: Callable[[], float] = _RNG.random,
    ) -> None:
        self._default_rate = default_rate
        self._rates = dict(rates or {})
        self._rng = rng

    def decide(self, model: str | None, header: str | None) -> SampleDecision:
        if header is not None:
            value = header.strip().lower()
            if value == "force":
                return SampleDecision.FORCED
            if value == "skip":
                return SampleDecision.SKIPPED
        rate = self._rates.get(model, self._default_rate) if model else self._default_rate
        if rate >= 1.0 or (rate > 0.0 and self._rng() < rate):
            return SampleDecision.SAMPLED_IN
        return SampleDecision.SAMPLED_OUT


class TrustedNetworks:
    """The peers whose ``x-driftloop-capture`` header counts (a list of CIDRs).

    >>> TrustedNetworks(["10.0.0.0/8"]).trusts(("10.1.2.3", 5000))
    True
    """

    def __init__(self, networks: Iterable[str] = LOOPBACK_NETWORKS) -> None:
        self._networks = tuple(ipaddress.ip_network(n, strict=False) for n in networks)
        self._cache: dict[str, bool] = {}

    def trusts(self, client: tuple[str, int] | None) -> bool:
        """False for a peer outside every network, and for one the server could not name."""
        if client is None or not self._networks:
            return False
        host = client[0]
        known = self._cache.get(host)
        if known is None:
            try:
                address = ipaddress.ip_address(host)
            except ValueError:
                known = False
            else:
                # A dual-stack socket names IPv4 peers as ::ffff:a.b.c.d.
                mapped = getattr(address, "ipv4_mapped", None)
                address = mapped or address
                known = any(address in network for network in self._networks)
            if len(self._cache) < 4096:  # bounded: peers are many, the answer is cheap to redo
                self._cache[host] = known
        return known
