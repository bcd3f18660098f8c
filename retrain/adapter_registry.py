"""The adapter registry: immutable adapter versions per alias, their statuses, and lineage.

Statuses move only along ``TRANSITIONS``; every move is an ``adapter_events`` row naming who
(``loop`` or ``operator``) and why, so the history of a version is never lost.

>>> from monitor.store import Store
>>> from retrain.schema import MIGRATIONS
>>> registry = AdapterRegistry(Store.open(":memory:", migrations=MIGRATIONS))
>>> a = registry.register("support", "ab12cd34", "/adapters/ab12cd34", dataset_id=None, run_id=None)
>>> a.served_name, a.status.value
('support-v1', 'training')
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from monitor.store import Store

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


class Status(StrEnum):
    TRAINING = "training"
    EVALUATING = "evaluating"
    STAGING = "staging"
    PRODUCTION = "production"
    DEPRECATED = "deprecated"
    FAILED = "failed"
    REJECTED = "rejected"


TRANSITIONS: dict[Status, frozenset[Status]] = {
    Status.TRAINING: frozenset({Status.EVALUATING, Status.FAILED}),
    Status.EVALUATING: frozenset({Status.STAGING, Status.REJECTED, Status.FAILED}),
    # staging -> rejected is an operator's veto; rejected -> staging an operator's override
    Status.STAGING: frozenset({Status.PRODUCTION, Status.REJECTED, Status.FAILED}),
    Status.PRODUCTION: frozenset({Status.DEPRECATED}),
    Status.DEPRECATED: frozenset({Status.PRODUCTION}),  # rollback or pin
    Status.REJECTED: frozenset({Status.STAGING}),
    Status.FAILED: frozenset(),
}


class AdapterRegistryError(ValueError):
    """An unknown adapter, a name that is not allowed, or a status change that is not allowed."""


def check_name(kind: str, value: str) -> str:
    """Aliases and ids end up in paths and vLLM names: letters, digits, ``.``, ``_``, ``-`` only."""
    if not NAME.match(value) or ".." in value:
        raise AdapterRegistryError(
            f"{kind} {value!r} is not allowed: use 1-64 letters, digits, '.', '_' or '-',"
            " starting with a letter or digit"
        )
    return value


@dataclass(frozen=True)
class Adapter:
    id: str
    model_alias: str
    version: int
    served_name: str
    path: str
    status: Status
    dataset_id: str | None
    run_id: str | None
    created_at: datetime
    updated_at: datetime
    object_key: str | None = None  # its bundle in object storage (fleet), once published
    digest: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {**self.__dict__, "status": self.status.value}


COLUMNS = (
    "id, model_alias, version, served_name, path, status, dataset_id, run_id, created_at,"
    " updated_at, object_key, digest"
)


class AdapterRegistry:
    """Adapter versions and their status history, in the service's DuckDB store."""

    def __init__(
        self, store: Store, clock: Callable[[], datetime] = lambda: datetime.now(UTC)
    ) -> None:
        self.store = store
        self.clock = clock

    def register(
        self, alias: str, adapter_id: str, path: str, *, dataset_id: str | None, run_id: str | None
    ) -> Adapter:
        """Record a new adapter version for ``alias`` in status ``training``."""
        check_name("alias", alias)
        check_name("adapter id", adapter_id)
        existing = self.find(adapter_id)
        if existing is not None:
            raise AdapterRegistryError(
                f"adapter {adapter_id} is already registered as {existing.served_name}"
                f" ({existing.status}): the same data and seed gave the same weights"
            )
        [(latest,)] = self.store.query(
            "SELECT coalesce(max(version), 0) FROM adapters WHERE model_alias = ?", [alias]
        )
        version = int(latest) + 1
        now = self.clock()
        self.store.execute(
            f"INSERT INTO adapters ({COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [
                adapter_id,
                alias,
                version,
                f"{alias}-v{version}",
                path,
                Status.TRAINING.value,
                dataset_id,
                run_id,
                now,
                now,
                None,
                None,
            ],
        )
        self._event(adapter_id, None, Status.TRAINING, "loop", "registered")
        return self.get(adapter_id)

    def transition(self, adapter_id: str, to: Status, *, actor: str, reason: str) -> Adapter:
        """Move an adapter to status ``to`` if ``TRANSITIONS`` allows it; record who and why."""
        adapter = self.get(adapter_id)
        if to not in TRANSITIONS[adapter.status]:
            allowed = ", ".join(sorted(TRANSITIONS[adapter.status])) or "none"
            raise AdapterRegistryError(
                f"{adapter.served_name} is {adapter.status}; it cannot become {to}"
                f" (allowed: {allowed})"
            )
        self.store.execute(
            "UPDATE adapters SET status = ?, updated_at = ? WHERE id = ?",
            [to.value, self.clock(), adapter_id],
        )
        self._event(adapter_id, adapter.status, to, actor, reason)
        return self.get(adapter_id)

    def record_bundle(self, adapter_id: str, object_key: str, digest: str) -> Adapter:
        """Where the adapter's immutable bundle lives in object storage, and its digest."""
        adapter = self.get(adapter_id)
        if adapter.digest not in (None, digest):
            raise AdapterRegistryError(
                f"{adapter.served_name} was published with digest {adapter.digest}, not {digest}"
            )
        self.store.execute(
            "UPDATE adapters SET object_key = ?, digest = ? WHERE id = ?",
            [object_key, digest, adapter_id],
        )
        return self.get(adapter_id)

    def find(self, adapter_id: str) -> Adapter | None:
        rows = self.store.query(f"SELECT {COLUMNS} FROM adapters WHERE id = ?", [adapter_id])
        return _adapter(rows[0]) if rows else None

    def get(self, adapter_id: str) -> Adapter:
        adapter = self.find(adapter_id)
        if adapter is None:
            raise AdapterRegistryError(f"no adapter {adapter_id!r}")
        return adapter

    def by_served_name(self, served_name: str) -> Adapter | None:
        rows = self.store.query(
            f"SELECT {COLUMNS} FROM adapters WHERE served_name = ?", [served_name]
        )
        return _adapter(rows[0]) if rows else None

    def versions(self, alias: str | None = None, status: Status | None = None) -> list[Adapter]:
        """Adapters, newest version first, optionally of one alias and/or status."""
        rows = self.store.query(
            f"SELECT {COLUMNS} FROM adapters"
            " WHERE (? IS NULL OR model_alias = ?) AND (? IS NULL OR status = ?)"
            " ORDER BY model_alias, version DESC",
            [alias, alias, status, status],
        )
        return [_adapter(row) for row in rows]

    def production(self, alias: str) -> Adapter | None:
        found = self.versions(alias, Status.PRODUCTION)
        return found[0] if found else None

    def past_retention(self, alias: str, keep: int) -> list[Adapter]:
        """Deprecated versions beyond the newest ``keep`` (deprecated is reached only from
        production, see TRANSITIONS, so each of them once served)."""
        return self.versions(alias, Status.DEPRECATED)[keep:]

    def events(self, adapter_id: str) -> list[dict[str, Any]]:
        return self.store.records(
            "SELECT occurred_at, from_status, to_status, actor, reason FROM adapter_events"
            " WHERE adapter_id = ? ORDER BY id",
            [adapter_id],
        )

    def lineage(self, adapter_id: str) -> dict[str, Any]:
        """The adapter with its dataset, the run and drift evaluation behind it, its evaluations
        and deployments: everything needed to answer "why is this version serving?"."""
        adapter = self.get(adapter_id)
        dataset = self.store.records(
            "SELECT id, created_at, path, manifest FROM datasets WHERE id = ?",
            [adapter.dataset_id],
        )
        run = self.store.records(
            "SELECT id, trigger, reason, status, drift_run_id, started_at, finished_at"
            " FROM retrain_runs WHERE id = ?",
            [adapter.run_id],
        )
        for row in dataset:
            row["manifest"] = json.loads(row["manifest"])
        return {
            "adapter": adapter.as_dict(),
            "events": self.events(adapter_id),
            "dataset": dataset[0] if dataset else None,
            "run": run[0] if run else None,
            "evaluations": self.store.records(
                "SELECT id, created_at, golden_set, passed, report_path FROM evaluations"
                " WHERE adapter_id = ? ORDER BY created_at",
                [adapter_id],
            ),
            "deployments": self.store.records(
                "SELECT occurred_at, action, state, actor, reason FROM deployments"
                " WHERE adapter_id = ? ORDER BY id",
                [adapter_id],
            ),
        }

    def _event(
        self, adapter_id: str, before: Status | None, after: Status, actor: str, reason: str
    ) -> None:
        self.store.execute(
            "INSERT INTO adapter_events (adapter_id, occurred_at, from_status, to_status, actor,"
            " reason) VALUES (?, ?, ?, ?, ?, ?)",
            [adapter_id, self.clock(), before, after.value, actor, reason],
        )


def _adapter(row: tuple[Any, ...]) -> Adapter:
    values = list(row)
    values[5] = Status(values[5])
    return Adapter(*values)
