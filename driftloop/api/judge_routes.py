"""Control API routes of the judges: calibrate the configured LLM judge, list calibrations.

A calibration on record is what lets the gate count the judge's pairwise verdicts
(``retrain.gate.judge``); one below the bar makes the gate say "not used" and why.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query, Request
from pydantic import BaseModel, ConfigDict, Field

from driftloop.judges_wiring import CalibrationRunning, Calibrator


class CalibrateRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    limit: int | None = Field(default=None, ge=1, le=100_000)


def judge_router(calibrator: Calibrator) -> APIRouter:
    router = APIRouter(prefix="/api/v1")

    @router.post("/judges/calibrate", status_code=202)
    def calibrate(body: CalibrateRequest, request: Request) -> dict[str, Any]:
        """Start judging the labelled set (minutes on a CPU); GET /judges/calibration follows it."""
        request.state.audit = {"limit": body.limit}
        try:
            return calibrator.start(body.limit)
        except CalibrationRunning as exc:
            raise HTTPException(409, str(exc)) from exc

    @router.get("/judges/calibration")
    def calibration_state() -> dict[str, Any]:
        """The running calibration, or the last one's summary or error since the service started."""
        return calibrator.state()

    @router.get("/judges/calibrations")
    def calibrations(
        limit: Annotated[int, Query(ge=1, le=1000)] = 20,
    ) -> list[dict[str, Any]]:
        """Calibrations on record, newest first (the gate reads the newest of its judge)."""
        return [
            {k: v.isoformat() if hasattr(v, "isoformat") else v for k, v in row.items()}
            for row in calibrator.history(limit)
        ]

    return router
