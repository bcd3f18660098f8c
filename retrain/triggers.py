"""When to retrain: drift, quality, volume, schedule or an operator, gated by safety switches.

Each evaluation yields one ``TriggerDecision`` that is stored in ``retrain_decisions`` with its reason,
"not triggered" included, so "why did it (not) retrain at 03:00?" always has an answer.

Conditions, first match wins: ``drift`` (a watched signal tripped in each of the last K
evaluations), ``quality`` (the judges' mean score of the latest window below a bar), ``volume``
(N new feedback examples since the last run), ``schedule`` (time since the last run). Then the
switches, any of which suppresses: paused by an operator, a run already in progress, cooldown
since the last run, fewer training examples than the minimum.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path

from filelock import FileLock, Timeout

from monitor.store import Store
from retrain.metrics import LoopMetrics
from retrain.runs import RunLog
from retrain.switches import is_paused


class Trigger(StrEnum):
    DRIFT = "drift"
    QUALITY = "quality"
    VOLUME = "volume"
    SCHEDULE = "schedule"
    MANUAL = "manual"
    NONE = "none"


class TriggerVerdict(StrEnum):
    TRIGGERED = "triggered"
    SUPPRESSED = "suppressed"
    NOT_TRIGGERED = "not_triggered"
    DRY_RUN = "dry_run"


@dataclass(frozen=True)
class TriggerSettings:
    drift_signals: tuple[str, ...] = ("combined",)  # the alias's drift decision
    drift_consecutive: int = 3
    quality_bar: float | None = 3.0
    quality_window: int = 200
    quality_min_samples: int = 20
    volume_examples: int | None = 200
    schedule_s: float | None = None
    cooldown_s: float = 3600.0
    min_examples: int = 20


@dataclass(frozen=True)
class TriggerDecision:
    trigger: Trigger
    verdict: TriggerVerdict
    reason: str
    drift_run_id: int | None = None

    @property
    def should_run(self) -> bool:
        return self.verdict is TriggerVerdict.TRIGGERED


class RunLock:
    """One retrain at a time per alias, across threads and processes.

    A ``filelock`` (an ``flock`` on Unix): the kernel drops it when the holder dies, so a crash
    never leaves the loop locked (the stale ``running`` row is reconciled at startup instead).
    The holder's pid is written into the file for whoever looks.
    """

    def __init__(self, directory: Path, alias: str) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.path = directory / f"retrain-{alias}.lock"
        # Not thread-local: the thread that releases need not be the one that acquired.
        self._lock = FileLock(self.path, thread_local=False, on_acquired=_write_pid)

    def acquire(self) -> bool:
        """Take the lock if it is free; False (at once) if anyone, this object included, holds it."""
        if self._lock.is_locked:
            return False
        try:
            self._lock.acquire(blocking=False)
        except Timeout:
            return False
        return True

    def held_elsewhere(self) -> bool:
        if self._lock.is_locked:
            return False
        if self.acquire():
            self.release()
            return False
        return True

    def release(self) -> None:
        if self._lock.is_locked:
            self._lock.release()


def _write_pid(fd: int) -> None:
    os.ftruncate(fd, 0)
    os.pwrite(fd, str(os.getpid()).encode(), 0)


class Triggers:
    def __init__(
        self,
        store: Store,
        metrics: LoopMetrics,
        settings: TriggerSettings,
        lock_dir: Path,
        available_examples: Callable[[str], int],
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.store = store
        self.metrics = metrics
        self.settings = settings
        self.lock_dir = lock_dir
        self.available_examples = available_examples
        self.clock = clock
        self.runs = RunLog(store, clock)

    def evaluate(
        self, alias: str, *, manual_reason: str | None = None, dry_run: bool = False
    ) -> TriggerDecision:
        """Decide whether ``alias`` should retrain now, record the decision, and return it."""
        last = self._last_run_start(alias)  # read once: volume, schedule and cooldown use it
        if manual_reason is not None:
            trigger, why, drift_run = Trigger.MANUAL, f"operator: {manual_reason}", None
        else:
            trigger, why, drift_run = self._condition(alias, last)
        if trigger is Trigger.NONE:
            decision = TriggerDecision(trigger, TriggerVerdict.NOT_TRIGGERED, why)
        else:
            block = self._suppressed_by(alias, last, manual=trigger is Trigger.MANUAL)
            if block:
                decision = TriggerDecision(
                    trigger, TriggerVerdict.SUPPRESSED, f"{why}; suppressed: {block}"
                )
            else:
                decision = TriggerDecision(trigger, TriggerVerdict.TRIGGERED, why, drift_run)
        if dry_run:
            decision = TriggerDecision(
                decision.trigger,
                TriggerVerdict.DRY_RUN,
                f"would be {decision.verdict}: {decision.reason}",
                decision.drift_run_id,
            )
        self.record(alias, decision)
        return decision

    def record(self, alias: str, decision: TriggerDecision, run_id: str | None = None) -> None:
        self.runs.record_decision(
            alias, decision.trigger, decision.verdict, decision.reason, run_id
        )
        self.metrics.trigger_decisions.labels(
            model=alias, trigger=decision.trigger.value, decision=decision.verdict.value
        ).inc()

    # --- conditions ---------------------------------------------------------------------------

    def _condition(self, alias: str, last: datetime | None) -> tuple[Trigger, str, int | None]:
        s = self.settings
        drift = self._drift(alias)
        if drift is not None:
            return Trigger.DRIFT, drift[0], drift[1]
        if s.quality_bar is not None:
            mean, n = self._judge_mean(alias)
            if n >= s.quality_min_samples and mean is not None and mean < s.quality_bar:
                return (
                    Trigger.QUALITY,
                    f"judge mean {mean:.2f} over the last {n} judgments < bar {s.quality_bar}",
                    None,
                )
        if s.volume_examples is not None:
            fresh = self._feedback_since(alias, last)
            if fresh >= s.volume_examples:
                return Trigger.VOLUME, f"{fresh} new feedback examples >= {s.volume_examples}", None
        if s.schedule_s is not None and (
            last is None or (self.clock() - last).total_seconds() >= s.schedule_s
        ):
            return Trigger.SCHEDULE, f"scheduled every {s.schedule_s:.0f} s", None
        return Trigger.NONE, "not triggered: no condition met", None

    def _drift(self, alias: str) -> tuple[str, int] | None:
        """Reason and newest drift_runs id if a watched signal tripped in each of its last K runs."""
        k = self.settings.drift_consecutive
        for signal in self.settings.drift_signals:
            rows = self.store.query(
                "SELECT id, drifted FROM drift_runs WHERE model_alias = ? AND signal = ?"
                " ORDER BY run_at DESC, id DESC LIMIT ?",
                [alias, signal, k],
            )
            if len(rows) == k and all(drifted for _, drifted in rows):
                return f"{signal} drifted in the last {k} evaluations", int(rows[0][0])
        return None

    def _judge_mean(self, alias: str) -> tuple[float | None, int]:
        [(mean, n)] = self.store.query(
            "SELECT avg(score), count(*) FROM (SELECT score FROM judgments"
            " WHERE model_alias = ? AND source = 'traffic' AND outcome = 'scored'"
            " ORDER BY created_at DESC LIMIT ?)",
            [alias, self.settings.quality_window],
        )
        return (float(mean) if mean is not None else None), int(n)

    def _feedback_since(self, alias: str, since: datetime | None) -> int:
        [(n,)] = self.store.query(
            "SELECT count(*) FROM feedback WHERE model_alias = ? AND (? IS NULL OR received_at > ?)",
            [alias, since, since],
        )
        return int(n)

    def _last_run_start(self, alias: str) -> datetime | None:
        return self.runs.last_start(alias)

    # --- switches -----------------------------------------------------------------------------

    def _suppressed_by(self, alias: str, last: datetime | None, *, manual: bool) -> str | None:
        """The first safety switch that blocks a run, or None. An operator's manual run skips
        the cooldown (they asked for it now) but not the pause, the lock or the minimum data."""
        if is_paused(self.store, alias):
            return "paused by an operator"
        if RunLock(self.lock_dir, alias).held_elsewhere():
            return "a retrain run is already in progress"
        if not manual and last is not None:
            left = self.settings.cooldown_s - (self.clock() - last).total_seconds()
            if left > 0:
                return f"cooldown: {left:.0f} s left of {self.settings.cooldown_s:.0f} s"
        examples = self.available_examples(alias)
        if examples < self.settings.min_examples:
            return f"only {examples} training examples, need {self.settings.min_examples}"
        return None
