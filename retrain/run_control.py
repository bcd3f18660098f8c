"""What a running retrain run shares with the outside while it runs: a cancel, and its progress.

``ActiveRuns`` holds one ``RunHandle`` per run in progress in this process (the loop and the
control API live in one process: ``serve``, or the fleet's ``controller``). A cancel sets the
handle's event: the trainer kills its subprocess or Ray task at once, and the loop checks the
event before every later stage, so a cancel lands during training immediately and otherwise at
the next stage boundary.

``TrainingWatch`` turns the trainer's progress events into the run's timeline (the train stage's
``progress``: step, loss, steps/s), the per-step gauges and a log line; the timeline is written to
the store at most every ``write_every_s`` so a fast trainer does not flood DuckDB.

>>> runs = ActiveRuns()
>>> handle = runs.start("r1", "support")
>>> runs.cancel("r1", "operator", "wrong data")
'support'
>>> handle.cancelled.is_set(), handle.cancelled_by
(True, 'operator: wrong data')
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from retrain.metrics import LoopMetrics
from retrain.training.spec import TrainingProgress

log = logging.getLogger(__name__)

PROGRESS_WRITE_S = 5.0


class RunNotActiveError(LookupError):
    """The run named is not in progress here (unknown, or already finished)."""


class RunCancelled(RuntimeError):
    """An operator cancelled the run; the message says who and why."""


@dataclass
class RunHandle:
    run_id: str
    alias: str
    cancelled: threading.Event = field(default_factory=threading.Event)
    cancelled_by: str | None = None

    def check(self) -> None:
        """Raise ``RunCancelled`` once the run was cancelled."""
        if self.cancelled.is_set():
            raise RunCancelled(f"cancelled by {self.cancelled_by}")


class ActiveRuns:
    """The runs in progress in this process, by id."""

    def __init__(self) -> None:
        self._runs: dict[str, RunHandle] = {}
        self._lock = threading.Lock()

    def start(self, run_id: str, alias: str) -> RunHandle:
        with self._lock:
            handle = self._runs[run_id] = RunHandle(run_id, alias)
        return handle

    def get(self, run_id: str) -> RunHandle:
        """The handle of a run in progress (``RunNotActiveError`` when it is not)."""
        with self._lock:
            handle = self._runs.get(run_id)
        if handle is None:
            raise RunNotActiveError(f"retrain run {run_id!r} is not in progress")
        return handle

    def finish(self, run_id: str) -> None:
        with self._lock:
            self._runs.pop(run_id, None)

    def cancel(self, run_id: str, actor: str, reason: str) -> str:
        """Ask a run to stop; returns its alias. The run itself records how it ended."""
        handle = self.get(run_id)
        with self._lock:
            if not handle.cancelled.is_set():
                handle.cancelled_by = f"{actor}: {reason}"
                handle.cancelled.set()
        log.warning("retrain %s of %s cancelled by %s", run_id, handle.alias, handle.cancelled_by)
        return handle.alias


@dataclass
class TrainingWatch:
    """The train stage's progress sink: gauges, the timeline entry, a throttled store write."""

    alias: str
    metrics: LoopMetrics
    entry: dict[str, Any]  # the train stage's timeline entry, shown by GET /retrain/runs
    write: Callable[[], None]  # writes the run's timeline to the store
    write_every_s: float = PROGRESS_WRITE_S
    _written_at: float = field(default=float("-inf"))

    def __call__(self, p: TrainingProgress) -> None:
        rate = f", {p.steps_per_second:.2f} steps/s" if p.steps_per_second else ""
        loss = f", loss {p.loss:.3f}" if p.loss is not None else ""
        log.info("%s training %s: step %d/%d%s%s", self.alias, p.phase, p.step, p.max_steps,
                 loss, rate)  # fmt: skip
        self.metrics.training_step.labels(model=self.alias).set(p.step)
        if p.loss is not None:
            self.metrics.training_loss.labels(model=self.alias).set(p.loss)
        if p.steps_per_second is not None:
            self.metrics.training_rate.labels(model=self.alias).set(p.steps_per_second)
        self.entry["progress"] = {
            "phase": p.phase,
            "step": p.step,
            "max_steps": p.max_steps,
            "loss": p.loss,
            "steps_per_second": p.steps_per_second,
            "elapsed_s": round(p.elapsed_s, 1),
        }
        now = time.monotonic()
        if now - self._written_at >= self.write_every_s:
            self._written_at = now
            self.write()
