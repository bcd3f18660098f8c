"""Which requests get captured: a rate per model, overridable per request by a header."""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping
from enum import StrEnum

CAPTURE_HEADER = "x-driftloop-capture"


class Decision(StrEnum):
    FORCED = "forced"
    SKIPPED = "skipped"
    SAMPLED_IN = "sampled_in"
    SAMPLED_OUT = "sampled_out"

    @property
    def captures(self) -> bool:
        return self in (Decision.FORCED, Decision.SAMPLED_IN)


class Sampler:
    """Decides capture per request; ``x-driftloop-capture: force|skip`` beats the rates.

    >>> Sampler(0.0, {"support": 1.0}).decide("support", None)
    <Decision.SAMPLED_IN: 'sampled_in'>
    """

    def __init__(
        self,
        default_rate: float,
        rates: Mapping[str, float] | None = None,
        rng: Callable[[], float] = random.random,
    ) -> None:
        self._default_rate = default_rate
        self._rates = dict(rates or {})
        self._rng = rng

    def decide(self, model: str | None, header: str | None) -> Decision:
        if header is not None:
            value = header.strip().lower()
            if value == "force":
                return Decision.FORCED
            if value == "skip":
                return Decision.SKIPPED
        rate = self._rates.get(model, self._default_rate) if model else self._default_rate
        if rate >= 1.0 or (rate > 0.0 and self._rng() < rate):
            return Decision.SAMPLED_IN
        return Decision.SAMPLED_OUT
