"""Every write to ``deployments``: one row per alias switch, ``loading`` until it is done."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

from monitor.store import Store


class DeploymentLog:
    def __init__(
        self, store: Store, clock: Callable[[], datetime] = lambda: datetime.now(UTC)
    ) -> None:
        self.store = store
        self.clock = clock

    def begin(
        self,
        alias: str,
        adapter_id: str | None,
        served_name: str,
        previous: str,
        action: str,
        actor: str,
        reason: str,
    ) -> int:
        """A ``loading`` row, written before vLLM is touched: a crash after it is visible."""
        [(row_id,)] = self.store.execute(
            "INSERT INTO deployments (occurred_at, model_alias, adapter_id, served_name, previous,"
            " action, state, actor, reason) VALUES (?, ?, ?, ?, ?, ?, 'loading', ?, ?) RETURNING id",
            [self.clock(), alias, adapter_id, served_name, previous, action, actor, reason],
        )
        return int(row_id)

    def finish(self, row_id: int, state: str, reason: str) -> None:
        self.store.execute(
            "UPDATE deployments SET state = ?, reason = ? WHERE id = ?", [state, reason, row_id]
        )

    def loading(self, alias: str) -> list[tuple[int, str]]:
        """(row id, served name) of the alias's switches that never finished."""
        rows = self.store.query(
            "SELECT id, served_name FROM deployments WHERE model_alias = ? AND state = 'loading'",
            [alias],
        )
        return [(int(row_id), served) for row_id, served in rows]

    def previous_forward(self, alias: str, served_name: str) -> str | None:
        """What served the alias before ``served_name`` was rolled forward to, if recorded.

        Rollbacks are not counted as "forward", so rolling back twice walks further back
        instead of undoing the first rollback.
        """
        rows = self.store.query(
            "SELECT previous FROM deployments WHERE model_alias = ? AND served_name = ?"
            " AND state = 'switched' AND action IN ('deploy', 'promote', 'pin')"
            " ORDER BY id DESC LIMIT 1",
            [alias, served_name],
        )
        return rows[0][0] if rows else None
