"""The alias table: public model name -> served model name, swapped atomically for rollouts."""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping

OTHER = "other"


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
        # Rises on every change: the fleet's routing table version (sidecars fetch by it).
        self.version = 0

    def resolve(self, model: str | None) -> str | None:
        if model is None:
            return None
        return self._aliases.get(model, model)

    def set(self, alias: str, served: str) -> None:
        with self._lock:
            self._aliases = {**self._aliases, alias: served}
            self.version += 1

    def replace(self, aliases: Mapping[str, str], version: int | None = None) -> None:
        """Swap in a whole table; ``version`` is the controller's (a sidecar applying it)."""
        with self._lock:
            self._aliases = dict(aliases)
            self.version = self.version + 1 if version is None else version

    def versioned(self) -> tuple[int, dict[str, str]]:
        """The version and the mapping, read together."""
        with self._lock:
            return self.version, dict(self._aliases)

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
