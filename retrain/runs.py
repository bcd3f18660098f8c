"""Every write to ``retrain_runs`` and ``retrain_decisions``, and the reads the API shows.

The loop starts a run and updates it stage by stage; a restart fails the runs it interrupted;
the triggers record each decision. One module writes these tables so their states stay one story.

>>> from monitor.store import Store
>>> from retrain.schema import MIGRATIONS
>>> runs = RunLog(Store.open(":memory:", migrations=MIGRATIONS))
>>> runs.start("r1", "support", "manual", "operator: try", drift_run_id=None)
>>> runs.update("r1", status="shipped")
>>> [row["status"] for row in runs.recent("support", 10)]
['shipped']
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from monitor.store import Store

# The columns ``update`` may set: names are spliced into SQL, so only these are accepted.
RUN_COLUMNS = frozenset(
    {"status", "stage", "error", "finished_at", "dataset_id", "adapter_id", "timeline"}
)


class RunLog:
    """Retrain runs and trigger decisions in the service's store."""

    def __init__(
        self, store: Store, clock: Callable[[], datetime] = lambda: datetime.now(UTC)
    ) -> None:
        self.store = store
        self.clock = clock

    def start(
        self, run_id: str, alias: str, trigger: str, reason: str, *, drift_run_id: int | None
    ) -> None:
        """A new run in status ``running`` with an empty timeline."""
        self.store.execute(
            "INSERT INTO retrain_runs (id, model_alias, trigger, reason, started_at, status,"
            " drift_run_id, timeline) VALUES (?, ?, ?, ?, ?, 'running', ?, '[]')",
            [run_id, alias, trigger, reason, self.clock(), drift_run_id],
        )

    def update(self, run_id: str, **columns: Any) -> None:
        unknown = set(columns) - RUN_COLUMNS
        if unknown:
            raise ValueError(f"retrain_runs has no updatable columns {sorted(unknown)}")
        assignments = ", ".join(f"{name} = ?" for name in columns)
        self.store.execute(
            f"UPDATE retrain_runs SET {assignments} WHERE id = ?", [*columns.values(), run_id]
        )

    def fail_interrupted(self, alias: str) -> None:
        """After a restart: a run still ``running`` died with the service."""
        self.store.execute(
            "UPDATE retrain_runs SET status = 'failed', finished_at = ?,"
            " error = 'interrupted: the service stopped during the run'"
            " WHERE model_alias = ? AND status = 'running'",
            [self.clock(), alias],
        )

    def last_start(self, alias: str) -> datetime | None:
        [(last,)] = self.store.query(
            "SELECT max(started_at) FROM retrain_runs WHERE model_alias = ?", [alias]
        )
        return last

    def recent(self, alias: str | None, limit: int) -> list[dict[str, Any]]:
        """Runs, newest first, with their stage timeline; ``alias`` None: every alias."""
        return self.store.records(
            "SELECT id, model_alias, trigger, reason, status, stage, error, started_at,"
            " finished_at, drift_run_id, dataset_id, adapter_id, timeline FROM retrain_runs"
            " WHERE (? IS NULL OR model_alias = ?) ORDER BY started_at DESC LIMIT ?",
            [alias, alias, limit],
        )

    def record_decision(
        self, alias: str, trigger: str, decision: str, reason: str, run_id: str | None
    ) -> None:
        self.store.execute(
            "INSERT INTO retrain_decisions (decided_at, model_alias, trigger, decision, reason,"
            " run_id) VALUES (?, ?, ?, ?, ?, ?)",
            [self.clock(), alias, trigger, decision, reason, run_id],
        )

    def recent_decisions(self, alias: str | None, limit: int) -> list[dict[str, Any]]:
        """Trigger decisions, including those that started nothing, newest first."""
        return self.store.records(
            "SELECT id, decided_at, model_alias, trigger, decision, reason, run_id"
            " FROM retrain_decisions WHERE (? IS NULL OR model_alias = ?)"
            " ORDER BY id DESC LIMIT ?",
            [alias, alias, limit],
        )
