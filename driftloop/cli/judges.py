"""``driftloop judges calibrate --record``: a calibration the running service does and records.

The gate and the teacher trust the LLM judge only on a calibration on record, and the service
owns the DuckDB file, so a recorded calibration runs inside it (``POST /api/v1/judges/calibrate``);
this follows it to the end and returns its outcome.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from driftloop.api.client import ControlClient


def calibrate_in_service(
    client: ControlClient,
    limit: int | None,
    *,
    poll_s: float = 2.0,
    timeout_s: float = 3600.0,
    progress: Callable[[str], None] = lambda line: None,
) -> dict[str, Any]:
    """Start the service's calibration and wait for it: its summary, kappa and flag, or error."""
    client.post("/judges/calibrate", {"limit": limit})
    started = time.monotonic()
    last_note = started
    while time.monotonic() - started < timeout_s:
        state: dict[str, Any] = client.get("/judges/calibration")
        if not state["running"]:
            return state
        if time.monotonic() - last_note >= 30:
            progress(f"calibrating in the service: {time.monotonic() - started:.0f} s so far")
            last_note = time.monotonic()
        time.sleep(poll_s)
    raise TimeoutError(f"the service's calibration still runs after {timeout_s:.0f} s")
