"""Shipping adapters: load into vLLM under a versioned name, switch the alias, roll back, reconcile.

Order of a deploy: a ``deployments`` row in state ``loading``, the adapter loaded into vLLM, the
alias switched in the sidecar (atomic), the adapter registry updated, the row marked ``switched``. A crash
anywhere before the last step leaves a ``loading`` row: ``reconcile`` at startup routes the alias
back to what the adapter registry says is in production and marks the row ``failed``; nothing is
half-shipped. (Runs the restart interrupted are failed by ``RetrainLoop.reconcile``.)

Where versions are loaded is the ``Placement``: one vLLM (``VLLMAdmin``, one box) or every
replica of a fleet (``retrain.serving.fleet.FleetPlacement``, which returns from ``load`` only
once every live replica holds the version); the alias switch is the alias table's ``set`` (one
box) or the fleet's routing log.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol

from monitor.aliases import Canary
from monitor.failpoints import failpoint
from monitor.store import Store
from retrain.adapter_registry import Adapter, AdapterRegistry, AdapterRegistryError, Status
from retrain.metrics import LoopMetrics
from retrain.serving.deployments import DeploymentLog

log = logging.getLogger(__name__)


class Placement(Protocol):
    def load(self, name: str, path: str) -> None:
        """Serve the adapter at ``path`` as ``name`` wherever the alias is served; raise if not."""

    def keep(self, name: str, path: str) -> None:
        """After a restart: make sure ``name`` stays served (a fleet does not wait for replicas)."""

    def unload(self, name: str) -> None: ...


class AliasSwitch(Protocol):
    """Where an alias's route changes: the alias table (one box) or the fleet's routing log."""

    def set(self, alias: str, served: str) -> None: ...

    def set_canary(self, alias: str, canary: Canary | None) -> None: ...


@dataclass(frozen=True)
class Route:
    """What an alias serves: an adapter version, or the base model (``adapter`` None)."""

    served_name: str
    adapter: Adapter | None


class Deployer:
    def __init__(
        self,
        adapters: AdapterRegistry,
        admin: Placement,
        aliases: AliasSwitch,
        metrics: LoopMetrics,
        base_model: str,
        keep_versions: int = 3,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.adapters = adapters
        self.store: Store = adapters.store
        self.admin = admin
        self.aliases = aliases
        self.metrics = metrics
        self.base_model = base_model
        self.keep_versions = keep_versions
        self.clock = clock
        self.deployments = DeploymentLog(self.store, clock)
        self._exported: dict[str, str] = {}

    def current(self, alias: str) -> Route:
        production = self.adapters.production(alias)
        if production is None:
            return Route(self.base_model, None)
        return Route(production.served_name, production)

    def deploy(self, adapter: Adapter, *, actor: str, reason: str, action: str = "deploy") -> Route:
        """Make ``adapter`` (staging or deprecated) the alias's production version."""
        alias = adapter.model_alias
        before = self.current(alias)
        if before.adapter is not None and before.adapter.id == adapter.id:
            return before
        if adapter.status not in (Status.STAGING, Status.DEPRECATED):
            raise AdapterRegistryError(
                f"{adapter.served_name} is {adapter.status}; only staging or deprecated versions"
                " can be deployed"
            )
        row = self._begin(alias, adapter.id, adapter.served_name, before, action, actor, reason)
        try:
            self.admin.load(adapter.served_name, adapter.path)
        except Exception as exc:
            self._finish(row, "failed", f"{reason}; load failed: {exc}")
            raise
        failpoint("deploy.after_load")
        self.aliases.set(alias, adapter.served_name)
        if before.adapter is not None:
            self.adapters.transition(
                before.adapter.id, Status.DEPRECATED, actor=actor, reason=f"replaced: {reason}"
            )
        self.adapters.transition(adapter.id, Status.PRODUCTION, actor=actor, reason=reason)
        self._finish(row, "switched", reason)
        self._export(alias)
        self._unload_past_retention(alias)
        return self.current(alias)

    def rollback(self, alias: str, *, actor: str, reason: str) -> Route:
        """Route the alias back to the previous production version (or the base model)."""
        before = self.current(alias)
        if before.adapter is None:
            raise AdapterRegistryError(
                f"{alias} serves the base model; there is nothing to roll back"
            )
        previous = self._before(alias, before.served_name)
        row = self._begin(
            alias,
            previous.id if previous else None,
            previous.served_name if previous else self.base_model,
            before,
            "rollback",
            actor,
            reason,
        )
        try:
            if previous is not None:
                self.admin.load(previous.served_name, previous.path)
        except Exception as exc:
            self._finish(row, "failed", f"{reason}; load failed: {exc}")
            raise
        self.aliases.set(alias, previous.served_name if previous else self.base_model)
        self.adapters.transition(
            before.adapter.id, Status.DEPRECATED, actor=actor, reason=f"rolled back: {reason}"
        )
        if previous is not None:
            self.adapters.transition(
                previous.id, Status.PRODUCTION, actor=actor, reason=f"rollback: {reason}"
            )
        self._finish(row, "switched", reason)
        kind = "automatic" if actor == "loop" else "manual"
        self.metrics.rollbacks.labels(model=alias, reason=kind).inc()
        self._export(alias)
        return self.current(alias)

    def _before(self, alias: str, served_name: str) -> Adapter | None:
        """What served the alias before ``served_name`` was rolled forward to (None: the base)."""
        previous = self.deployments.previous_forward(alias, served_name)
        if previous in (None, self.base_model):
            return None
        return self.adapters.by_served_name(previous)

    def reconcile(self, alias: str) -> Route:
        """After a restart: make vLLM and the alias table agree with the adapter registry."""
        interrupted = []
        for row_id, served in self.deployments.loading(alias):
            self.deployments.finish(
                row_id, "failed", "interrupted before the alias switch; reconciled"
            )
            interrupted.append(served)
            log.warning(
                "deployment %s of %s was interrupted; %s stays as it was", row_id, served, alias
            )
        for adapter in self.adapters.versions(alias):
            if adapter.status in (Status.TRAINING, Status.EVALUATING):
                self.adapters.transition(
                    adapter.id, Status.FAILED, actor="loop", reason="interrupted by a restart"
                )
        route = self.current(alias)
        if route.adapter is not None:
            self.admin.keep(route.adapter.served_name, route.adapter.path)
        for served in interrupted:
            if served != route.served_name and not self._retained(alias, served):
                self._unload_quietly(served)
        self.aliases.set(alias, route.served_name)
        self._export(alias)
        return route

    def _retained(self, alias: str, served: str) -> bool:
        """A deprecated version still kept loaded for rollback."""
        kept = self.adapters.versions(alias, Status.DEPRECATED)[: self.keep_versions]
        return any(a.served_name == served for a in kept)

    def _unload_past_retention(self, alias: str) -> None:
        for old in self.adapters.past_retention(alias, self.keep_versions):
            self._unload_quietly(old.served_name)

    def _unload_quietly(self, served: str) -> None:
        try:
            self.admin.unload(served)
        except Exception as exc:  # an adapter left loaded costs memory, not correctness
            log.warning("could not unload %s: %s", served, exc)

    def _export(self, alias: str) -> None:
        """One ``driftloop_deployed_adapter_info`` series per alias: the version it routes to."""
        served = self.current(alias).served_name
        old = self._exported.get(alias)
        if old is not None and old != served:
            self.metrics.deployed.remove(alias, old)
        self.metrics.deployed.labels(model=alias, adapter=served).set(1)
        self._exported[alias] = served

    def unload(self, served_name: str) -> None:
        """Drop a version from vLLM (a rejected candidate the gate had loaded)."""
        self.admin.unload(served_name)

    def _begin(
        self,
        alias: str,
        adapter_id: str | None,
        served_name: str,
        before: Route,
        action: str,
        actor: str,
        reason: str,
    ) -> int:
        return self.deployments.begin(
            alias, adapter_id, served_name, before.served_name, action, actor, reason
        )

    def _finish(self, row_id: int, state: str, reason: str) -> None:
        self.deployments.finish(row_id, state, reason)
