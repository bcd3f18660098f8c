"""Control API routes of the retrain loop: read its state, and override any automatic decision.

Mounted by ``driftloop.api.app.create_api`` behind the same bearer token and audit middleware. Each
write names what it did in ``request.state.audit`` so the audit row carries the body, not just
the path.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Path, Query, Request
from pydantic import BaseModel, ConfigDict, Field, model_validator

from driftloop.api.auth import OPERATOR
from monitor.vllm_admin import VLLMAdminError
from retrain.adapter_registry import AdapterRegistryError
from retrain.control import LoopControl, UnknownAdapterError
from retrain.run_control import RunNotActiveError
from retrain.serving.fleet import RolloutError

# Letters, digits, '.', '_', '-', never two dots in a row (no traversal): the registry's own rule
# (retrain.adapter_registry.check_name), said here so a bad name is a 422 before any route runs.
NAME_PATTERN = r"^[A-Za-z0-9](?:[A-Za-z0-9_-]|\.[A-Za-z0-9_-])*\.?$"
NAME_MAX = 64
# What a switch can fail with: the registry refused it, or a vLLM/replica could not load it.
PLACEMENT_ERRORS = (AdapterRegistryError, RolloutError, VLLMAdminError)
Alias = Annotated[
    str, Path(pattern=NAME_PATTERN, max_length=NAME_MAX, description="public model alias")
]
RunId = Annotated[
    str, Path(pattern=NAME_PATTERN, max_length=NAME_MAX, description="retrain run id")
]
AdapterId = Annotated[
    str, Path(pattern=NAME_PATTERN, max_length=NAME_MAX, description="adapter id")
]


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Reason(_Body):
    reason: str = Field(min_length=1, max_length=500)


class RetrainRequest(Reason):
    model: str = Field(pattern=NAME_PATTERN, max_length=NAME_MAX)


class DryRunRequest(_Body):
    model: str = Field(pattern=NAME_PATTERN, max_length=NAME_MAX)


class PinRequest(Reason):
    adapter_id: str | None = Field(default=None, pattern=NAME_PATTERN, max_length=NAME_MAX)


class Feedback(_Body):
    model: str = Field(pattern=NAME_PATTERN, max_length=NAME_MAX)
    prompt: str = Field(min_length=1, max_length=20_000)
    answer: str = Field(min_length=1, max_length=20_000, description="the wanted answer")
    rejected: str | None = Field(
        default=None,
        min_length=1,
        max_length=20_000,
        description="the unwanted answer (a preference pair); with request_id alone, the"
        " captured answer is the rejected one",
    )
    request_id: str | None = Field(default=None, max_length=64)

    @model_validator(mode="after")
    def _a_pair_differs(self) -> Feedback:
        if self.rejected is not None and self.rejected.strip() == self.answer.strip():
            raise ValueError("rejected is the same answer as answer")
        return self


def loop_router(
    control: LoopControl, known_aliases: Any, redact: Callable[[str], str] = lambda text: text
) -> APIRouter:
    """Routes over a running loop; ``known_aliases()`` bounds which aliases may be named.

    ``redact`` is the capture redactor: feedback text is stored as redacted as captured traffic.
    """
    router = APIRouter(prefix="/api/v1")

    def alias_known(alias: str) -> str:
        if alias not in known_aliases():
            raise HTTPException(404, f"unknown model alias {alias!r}; configure it in [aliases]")
        return alias

    def audited(request: Request, **detail: Any) -> None:
        request.state.audit = detail

    def fail(exc: Exception) -> HTTPException:
        if isinstance(exc, AdapterRegistryError):
            return HTTPException(404 if isinstance(exc, UnknownAdapterError) else 409, str(exc))
        # vLLM or a replica could not load the version: nothing switched, say who and why
        return HTTPException(502, f"not switched: {exc}")

    @router.get("/retrain/runs")
    def retrain_runs(
        model: Annotated[str | None, Query(pattern=NAME_PATTERN, max_length=NAME_MAX)] = None,
        limit: Annotated[int, Query(ge=1, le=500)] = 20,
    ) -> list[dict[str, Any]]:
        """Retrain runs, newest first, with their stage timeline."""
        return _jsonable(control.runs(model, limit))

    @router.get("/retrain/decisions")
    def retrain_decisions(
        model: Annotated[str | None, Query(pattern=NAME_PATTERN, max_length=NAME_MAX)] = None,
        limit: Annotated[int, Query(ge=1, le=500)] = 50,
    ) -> list[dict[str, Any]]:
        """Trigger decisions, including the ones that did not start a run, newest first."""
        return _jsonable(control.decisions(model, limit))

    @router.post("/retrain", status_code=202)
    def force_retrain(body: RetrainRequest, request: Request) -> dict[str, Any]:
        """Start a retrain now (skips the cooldown, not the pause, the lock or the data floor)."""
        alias = alias_known(body.model)
        audited(request, model=alias, reason=body.reason)
        # the run continues in the background; GET /retrain/runs follows it by this id
        decision, run_id = control.force(alias, body.reason, OPERATOR)
        if run_id is None:
            raise HTTPException(409, decision.reason)
        return {"accepted": True, "model": alias, "reason": decision.reason, "run": run_id}

    @router.post("/retrain/runs/{run_id}/cancel", status_code=202)
    def cancel_run(run_id: RunId, body: Reason, request: Request) -> dict[str, Any]:
        """Stop a run in progress: training is killed at once, any other stage finishes first
        and no later one starts; the run ends ``cancelled``."""
        audited(request, run=run_id, reason=body.reason)
        try:
            alias = control.cancel_run(run_id, actor=OPERATOR, reason=body.reason)
        except RunNotActiveError as exc:
            raise HTTPException(409, f"{exc}; GET /api/v1/retrain/runs shows how it ended") from exc
        return {"run": run_id, "model": alias, "cancelling": True}

    @router.post("/retrain/dry-run")
    def dry_run(body: DryRunRequest, request: Request) -> dict[str, Any]:
        """What the triggers would decide now, without running anything."""
        alias = alias_known(body.model)
        audited(request, model=alias)
        decision = control.dry_run(alias)
        return {"model": alias, "trigger": decision.trigger, "decision": decision.reason}

    def set_pause(alias: str, body: Reason, request: Request, paused: bool) -> dict[str, Any]:
        audited(request, reason=body.reason)
        control.set_paused(alias_known(alias), paused)
        return {"model": alias, "paused": paused}

    @router.post("/models/{alias}/pause")
    def pause(alias: Alias, body: Reason, request: Request) -> dict[str, Any]:
        """Stop automatic retraining of an alias until resumed."""
        return set_pause(alias, body, request, True)

    @router.post("/models/{alias}/resume")
    def resume(alias: Alias, body: Reason, request: Request) -> dict[str, Any]:
        """Resume automatic retraining of an alias."""
        return set_pause(alias, body, request, False)

    @router.post("/models/{alias}/rollback")
    def rollback(alias: Alias, body: Reason, request: Request) -> dict[str, Any]:
        """Route the alias back to its previous production version (or the base model)."""
        audited(request, reason=body.reason)
        try:
            route = control.rollback(alias_known(alias), actor=OPERATOR, reason=body.reason)
        except PLACEMENT_ERRORS as exc:
            raise fail(exc) from exc
        return {"model": alias, "serving": route.served_name}

    @router.get("/canaries")
    def canaries(
        model: Annotated[str | None, Query(pattern=NAME_PATTERN, max_length=NAME_MAX)] = None,
        limit: Annotated[int, Query(ge=1, le=500)] = 20,
    ) -> dict[str, Any]:
        """Running canaries with their live comparison, and every canary's decision."""
        return _jsonable(control.canaries(model, limit))

    @router.post("/adapters/{adapter_id}/canary")
    def start_canary(adapter_id: AdapterId, body: Reason, request: Request) -> dict[str, Any]:
        """Give a staged version the configured canary share of its alias now."""
        audited(request, reason=body.reason)
        try:
            adapter = control.start_canary(adapter_id, actor=OPERATOR, reason=body.reason)
        except PLACEMENT_ERRORS as exc:
            raise fail(exc) from exc
        return {"model": adapter.model_alias, "canary": adapter.served_name}

    @router.post("/models/{alias}/canary/promote")
    def promote_canary(alias: Alias, body: Reason, request: Request) -> dict[str, Any]:
        """End the alias's canary now: the candidate takes all of its traffic."""
        audited(request, reason=body.reason)
        try:
            adapter = control.promote_canary(alias_known(alias), actor=OPERATOR, reason=body.reason)
        except PLACEMENT_ERRORS as exc:
            raise fail(exc) from exc
        return {"model": alias, "serving": adapter.served_name}

    @router.post("/models/{alias}/canary/abort")
    def abort_canary(alias: Alias, body: Reason, request: Request) -> dict[str, Any]:
        """End the alias's canary now: production takes all traffic, the candidate is rejected."""
        audited(request, reason=body.reason)
        try:
            adapter = control.abort_canary(alias_known(alias), actor=OPERATOR, reason=body.reason)
        except PLACEMENT_ERRORS as exc:
            raise fail(exc) from exc
        return {"model": alias, "rejected": adapter.served_name}

    @router.post("/models/{alias}/pin")
    def pin(alias: Alias, body: PinRequest, request: Request) -> dict[str, Any]:
        """Pin the alias to a version (deploying it now) so the loop stops deploying; null unpins."""
        alias_known(alias)
        audited(request, adapter_id=body.adapter_id, reason=body.reason)
        try:
            route = control.pin(alias, body.adapter_id, actor=OPERATOR, reason=body.reason)
        except PLACEMENT_ERRORS as exc:
            raise fail(exc) from exc
        if route is None:
            return {"model": alias, "pinned": None}
        return {"model": alias, "pinned": body.adapter_id, "serving": route.served_name}

    @router.get("/adapters")
    def adapters(
        model: Annotated[str | None, Query(pattern=NAME_PATTERN, max_length=NAME_MAX)] = None,
    ) -> list[dict[str, Any]]:
        return [_jsonable(a.as_dict()) for a in control.adapters(model)]

    @router.get("/adapters/{adapter_id}")
    def adapter_lineage(adapter_id: AdapterId) -> dict[str, Any]:
        """An adapter with its lineage: dataset, run, drift evaluation, evaluations, deployments."""
        try:
            return _jsonable(control.lineage(adapter_id))
        except AdapterRegistryError as exc:
            raise HTTPException(404, str(exc)) from exc

    @router.post("/adapters/{adapter_id}/promote")
    def promote(adapter_id: AdapterId, body: Reason, request: Request) -> dict[str, Any]:
        """Ship a version now, overriding the gate (a rejected one goes through staging)."""
        audited(request, reason=body.reason)
        try:
            alias, route = control.promote(adapter_id, actor=OPERATOR, reason=body.reason)
        except PLACEMENT_ERRORS as exc:
            raise fail(exc) from exc
        return {"model": alias, "serving": route.served_name}

    @router.post("/adapters/{adapter_id}/veto")
    def veto(adapter_id: AdapterId, body: Reason, request: Request) -> dict[str, Any]:
        """Reject a staged version so it never ships automatically."""
        audited(request, reason=body.reason)
        try:
            adapter = control.veto(adapter_id, actor=OPERATOR, reason=body.reason)
        except AdapterRegistryError as exc:
            raise fail(exc) from exc
        return {"adapter": adapter.id, "status": adapter.status.value}

    @router.get("/evaluations")
    def evaluations(
        adapter_id: Annotated[str | None, Query(pattern=NAME_PATTERN, max_length=NAME_MAX)] = None,
    ) -> list[dict[str, Any]]:
        return _jsonable(control.evaluations(adapter_id))

    @router.post("/feedback", status_code=201)
    def feedback(body: Feedback, request: Request) -> dict[str, Any]:
        """A corrected answer for a prompt, or a preference pair: data for the next run."""
        alias = alias_known(body.model)
        audited(request, model=alias, request_id=body.request_id)
        try:
            feedback_id = control.add_feedback(
                alias,
                redact(body.prompt),
                redact(body.answer),
                request_id=body.request_id,
                actor=OPERATOR,
                rejected=None if body.rejected is None else redact(body.rejected),
            )
        except ValueError as exc:  # two answers that differ only in redacted PII are one
            raise HTTPException(422, f"rejected: {exc} once PII is redacted") from None
        audited(request, model=alias, feedback_id=feedback_id, request_id=body.request_id)
        return {"id": feedback_id, "model": alias}

    return router


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return value
