"""The fleet's routing table, kept in the controller's DuckDB so that a restart changes nothing.

Every alias change through the control API is a ``routing_changes`` row with the version it
made. A restarted controller starts from the config's aliases with the logged changes on top
and the last logged version, so sidecars keep what they apply and versions only rise.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from monitor.aliases import AliasTable, Canary
from monitor.store import Store


class RoutingLog:
    """The controller's alias table, with every change logged before it takes effect."""

    def __init__(self, store: Store, aliases: AliasTable) -> None:
        self.store, self.aliases = store, aliases
        self._lock = threading.Lock()  # one change at a time: versions are the log's keys

    def restore(self) -> None:
        """Apply the logged changes of configured aliases, at the last logged version."""
        rows = self.store.query(
            "SELECT alias, served_model, version FROM routing_changes"
            " QUALIFY row_number() OVER (PARTITION BY alias ORDER BY version DESC) = 1"
        )
        if not rows:
            return
        configured = self.aliases.snapshot()
        changed = {alias: served for alias, served, _ in rows if alias in configured}
        self.aliases.replace({**configured, **changed}, max(version for *_, version in rows))

    def set(self, alias: str, served: str) -> None:
        """The deployer's alias switch (a rollout, rollback or pin); no change, no new version."""
        if self.aliases.snapshot().get(alias) != served:
            self.route(alias, served, "deployment")

    def set_canary(self, alias: str, canary: Canary | None) -> None:
        """Start or end ``alias``'s canary (the canary table keeps it across restarts)."""
        what = f"canary {canary.served} at {canary.share:g}" if canary else "canary ended"
        served = self.aliases.snapshot().get(alias, alias)  # the route itself does not change
        self._change(alias, served, what, lambda v: self.aliases.set_canary(alias, canary, v))

    def route(self, alias: str, served_model: str, reason: str) -> int:
        """Route ``alias`` to ``served_model``; returns the new version."""
        return self._change(
            alias,
            served_model,
            reason,
            lambda v: self.aliases.replace({**self.aliases.snapshot(), alias: served_model}, v),
        )

    def _change(
        self, alias: str, served_model: str, reason: str, apply: Callable[[int], None]
    ) -> int:
        """Log a change at the next version, then ``apply(version)`` it: logged before it acts."""
        with self._lock:
            version = self.aliases.version + 1
            self.store.execute(
                "INSERT INTO routing_changes (version, alias, served_model, reason)"
                " VALUES (?, ?, ?, ?)",
                [version, alias, served_model, reason],
            )
            apply(version)
        return version
