"""An operator's view of a running loop: read its state, override any automatic decision.

The control API's routes call one method each; what an override does to the registry, the
deployer and the switches is decided here, not in the HTTP layer.
"""

from __future__ import annotations

import threading
from typing import Any

from retrain.adapter_registry import Adapter, AdapterRegistryError, Status, check_name
from retrain.feedback import add_feedback
from retrain.gate.evaluations import evaluations
from retrain.loop import RetrainLoop, new_run_id
from retrain.serving.canary import CanaryRelease
from retrain.serving.deploy import Route
from retrain.switches import set_paused, set_pinned
from retrain.triggers import TriggerDecision


class UnknownAdapterError(AdapterRegistryError):
    """No adapter has this id."""


class LoopControl:
    def __init__(self, loop: RetrainLoop) -> None:
        self._loop = loop

    # --- reads --------------------------------------------------------------------------------

    def runs(self, alias: str | None, limit: int) -> list[dict[str, Any]]:
        return self._loop.runs.recent(alias, limit)

    def decisions(self, alias: str | None, limit: int) -> list[dict[str, Any]]:
        return self._loop.runs.recent_decisions(alias, limit)

    def adapters(self, alias: str | None) -> list[Adapter]:
        return self._loop.adapters.versions(alias)

    def lineage(self, adapter_id: str) -> dict[str, Any]:
        return self._loop.adapters.lineage(adapter_id)

    def evaluations(self, adapter_id: str | None) -> list[dict[str, Any]]:
        return evaluations(self._loop.store, adapter_id)

    def canaries(self, alias: str | None, limit: int) -> dict[str, Any]:
        """Canary releases, newest first, and the live comparison of each running one."""
        canary = self._canary()
        running = {
            a: comparison.as_dict()
            for a in self._loop.aliases()
            if (comparison := canary.compare(a)) is not None
        }
        return {"running": running, "history": canary.history(alias, limit)}

    # --- overrides ----------------------------------------------------------------------------

    def force(self, alias: str, reason: str, actor: str) -> tuple[TriggerDecision, str | None]:
        """Start a run now in the background if the switches allow it: the decision, and the
        id the run will have (None when none starts)."""
        decision = self._loop.triggers.evaluate(alias, manual_reason=reason)
        if not decision.should_run:
            return decision, None
        run_id = new_run_id()
        # the run takes minutes; its retrain_runs row shows how far it got
        threading.Thread(
            target=self._loop.run,
            args=(alias, decision, actor, run_id),
            name=f"retrain-{alias}",
            daemon=True,
        ).start()
        return decision, run_id

    def cancel_run(self, run_id: str, *, actor: str, reason: str) -> str:
        """Stop a run in progress (training is killed at once); returns its alias."""
        return self._loop.cancel(run_id, actor, reason)

    def dry_run(self, alias: str) -> TriggerDecision:
        return self._loop.triggers.evaluate(alias, dry_run=True)

    def set_paused(self, alias: str, paused: bool) -> None:
        set_paused(self._loop.store, alias, paused)
        self._loop.metrics.paused.labels(model=alias).set(int(paused))

    def start_canary(self, adapter_id: str, *, actor: str, reason: str) -> Adapter:
        """Give a staged version the configured canary share now."""
        canary = self._canary()
        if not canary.settings.enabled:
            raise AdapterRegistryError("retrain.canary_share is 0: canaries are off")
        started = canary.start(self._adapter(adapter_id), actor=actor, reason=reason)
        return self._loop.adapters.get(started.adapter_id)

    def promote_canary(self, alias: str, *, actor: str, reason: str) -> Adapter:
        """End the alias's canary now: the candidate takes all traffic."""
        return self._canary().promote(alias, actor=actor, reason=f"operator: {reason}")

    def abort_canary(self, alias: str, *, actor: str, reason: str) -> Adapter:
        """End the alias's canary now: production takes all traffic, the candidate is rejected."""
        return self._canary().abort(alias, actor=actor, reason=f"operator: {reason}")

    def _canary(self) -> CanaryRelease:
        if self._loop.canary is None:
            raise AdapterRegistryError("this loop runs no canary releases")
        return self._loop.canary

    def rollback(self, alias: str, *, actor: str, reason: str) -> Route:
        return self._loop.deployer.rollback(alias, actor=actor, reason=reason)

    def pin(self, alias: str, adapter_id: str | None, *, actor: str, reason: str) -> Route | None:
        """Deploy ``adapter_id`` now and stop automatic deploys of ``alias``; None unpins."""
        if adapter_id is None:
            set_pinned(self._loop.store, alias, None)
            return None
        adapter = self._adapter(adapter_id, alias)
        route = self._loop.deployer.deploy(adapter, actor=actor, reason=reason, action="pin")
        set_pinned(self._loop.store, alias, adapter.id)
        return route

    def promote(self, adapter_id: str, *, actor: str, reason: str) -> tuple[str, Route]:
        """Ship a version now, overriding the gate (a rejected one goes through staging).

        Returns the alias it now serves and the route.
        """
        adapter = self._adapter(adapter_id)
        if adapter.status is Status.REJECTED:
            adapter = self._loop.adapters.transition(
                adapter.id, Status.STAGING, actor=actor, reason=f"override: {reason}"
            )
        route = self._loop.deployer.deploy(adapter, actor=actor, reason=reason, action="promote")
        return adapter.model_alias, route

    def veto(self, adapter_id: str, *, actor: str, reason: str) -> Adapter:
        """Reject a staged version so it never ships automatically."""
        return self._loop.adapters.transition(
            self._adapter(adapter_id).id, Status.REJECTED, actor=actor, reason=f"veto: {reason}"
        )

    def add_feedback(
        self,
        alias: str,
        prompt: str,
        answer: str,
        *,
        request_id: str | None,
        actor: str,
        rejected: str | None = None,
    ) -> str:
        """Store an operator's correction or preference pair (redacted by the caller)."""
        return add_feedback(
            self._loop.store,
            alias,
            prompt,
            answer,
            request_id=request_id,
            actor=actor,
            rejected=rejected,
        )

    def _adapter(self, adapter_id: str, alias: str | None = None) -> Adapter:
        check_name("adapter id", adapter_id)
        adapter = self._loop.adapters.find(adapter_id)
        if adapter is None:
            raise UnknownAdapterError(f"no adapter {adapter_id!r}")
        if alias is not None and adapter.model_alias != alias:
            raise AdapterRegistryError(f"adapter {adapter_id} belongs to {adapter.model_alias}")
        return adapter
