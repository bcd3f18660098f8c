"""The alias table: public model name -> served model name, swapped atomically for rollouts.

An alias may also run a canary: a share of its traffic goes to a candidate version. Which
requests go is decided by a stable hash of a request key (the session), so a conversation stays
on one version; requests without a key are split at random.
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

OTHER = "other"


@dataclass(frozen=True)
class Canary:
    """``share`` (0 < share < 1) of an alias's traffic goes to ``served``."""

    served: str
    share: float

    def __post_init__(self) -> None:
        if not 0 < self.share < 1:
            raise ValueError(f"a canary share is in (0, 1), not {self.share}")

    def takes(self, key: str | None) -> bool:
        """Whether the request with this key goes to the candidate (same key, same answer)."""
        seed = (
            os.urandom(8)
            if key is None
            else hashlib.blake2b(f"{self.served}\0{key}".encode(), digest_size=8).digest()
        )  # salted by the candidate: each canary samples other conversations
        return int.from_bytes(seed) < self.share * 2**64

    def as_dict(self) -> dict[str, str | float]:
        return {"served_model": self.served, "share": self.share}


class AliasTable:
    """Maps the ``model`` a client asks for to the name vLLM serves.

    Reads are lock-free (one dict lookup on an immutable snapshot); ``set``/``replace`` build a
    new snapshot and swap the reference, so a request sees either the old or the new mapping.

    >>> table = AliasTable({"support": "support-v1"})
    >>> table.set("support", "support-v2"); table.resolve("support")
    'support-v2'
    """

    def __init__(
        self, aliases: Mapping[str, str] | None = None, known_models: Iterable[str] = ()
    ) -> None:
        self._lock = threading.Lock()
        self._aliases: Mapping[str, str] = dict(aliases or {})
        self._known = frozenset(known_models)
        self._canaries: Mapping[str, Canary] = {}
        # Rises on every change: the fleet's routing table version (sidecars fetch by it).
        self.version = 0

    def resolve(self, model: str | None, key: str | None = None) -> str | None:
        """The served name for ``model``; ``key`` (the session) picks a side of a canary."""
        if model is None:
            return None
        canary = self._canaries.get(model)
        if canary is not None and canary.takes(key):
            return canary.served
        return self._aliases.get(model, model)

    def set_canary(self, alias: str, canary: Canary | None, version: int | None = None) -> None:
        """Start (or change) ``alias``'s canary; None ends it. ``version`` as in ``replace``."""
        with self._lock:
            canaries = {k: v for k, v in self._canaries.items() if k != alias}
            if canary is not None:
                canaries[alias] = canary
            self._canaries = canaries
            self.version = self.version + 1 if version is None else version

    def has_canary(self, model: str | None) -> bool:
        """Whether ``model`` splits its traffic now (callers then work out the request's key)."""
        return model in self._canaries

    def canaries(self) -> dict[str, Canary]:
        return dict(self._canaries)

    def set(self, alias: str, served: str) -> None:
        with self._lock:
            self._aliases = {**self._aliases, alias: served}
            self.version += 1

    def replace(
        self,
        aliases: Mapping[str, str],
        version: int | None = None,
        canaries: Mapping[str, Canary] | None = None,
    ) -> None:
        """Swap in a whole table; ``version`` is the controller's (a sidecar applying it).

        ``canaries`` None keeps the running ones (a config-only change).
        """
        with self._lock:
            self._aliases = dict(aliases)
            if canaries is not None:
                self._canaries = dict(canaries)
            self.version = self.version + 1 if version is None else version

    def versioned(self) -> tuple[int, dict[str, str], dict[str, Canary]]:
        """The version, the mapping and the canaries, read together."""
        with self._lock:
            return self.version, dict(self._aliases), dict(self._canaries)

    def snapshot(self) -> dict[str, str]:
        return dict(self._aliases)

    def known(self) -> frozenset[str]:
        """Every configured public or served name (the values metric labels may take)."""
        return frozenset(self._aliases) | self._known

    def label(self, model: str | None) -> str:
        """A bounded metric label: configured names pass, anything a client made up is ``other``."""
        if model is not None and (model in self._aliases or model in self._known):
            return model
        return OTHER
