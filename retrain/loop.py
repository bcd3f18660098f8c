"""The retrain loop: trigger -> dataset -> LoRA training -> golden-set gate -> deployment.

Every run is a ``retrain_runs`` row whose ``timeline`` grows stage by stage (so a crash shows how
far it got), and every adapter it makes goes through the adapter registry's statuses. The loop only
orchestrates; training and gating are passed in (``Trainer``, ``Gate``) so the composition root
decides how they run (a subprocess with the real model, or the tiny model in benchmarks).

A run ends in one of five ways: ``shipped`` (the gate passed and the alias now routes to the new
version), ``rejected`` (the gate said no: production untouched), ``failed`` (an error, named),
``suppressed`` (a teacher labelled the drifted prompts but too few labels passed its checks),
``cancelled`` (an operator stopped it: ``cancel``; training is killed at once, any other stage
finishes first and no later one starts).
With a canary configured a passing version ends its run as ``canary``: it serves a share of the
traffic, and ``CanaryRelease.check`` on later ticks promotes it or rolls it back on live data
(no new run starts for the alias meanwhile).
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from monitor.store import Store
from retrain.adapter_registry import Adapter, AdapterRegistry, Status
from retrain.cost import ComputePrices, RunCost
from retrain.data.catalog import dataset_ids, has_dataset, record_dataset
from retrain.data.dataset import DatasetSettings, build_dataset
from retrain.data.files import Dataset, iter_jsonl
from retrain.data.sources import training_examples
from retrain.data.teacher import Teacher, TeacherLabels
from retrain.gate.evaluations import record_evaluation
from retrain.metrics import LoopMetrics, Stage
from retrain.run_control import ActiveRuns, RunCancelled, TrainingWatch
from retrain.runs import RunLog
from retrain.serving.canary import CanaryRelease
from retrain.serving.deploy import Deployer, Route
from retrain.serving.guard import PostDeployGuard
from retrain.switches import pinned_adapter
from retrain.training.spec import TrainingCancelledError, TrainingProgress
from retrain.triggers import RunLock, TriggerDecision, Triggers

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainedAdapter:
    """What a trainer hands back: a content-addressed adapter folder and its training metrics."""

    id: str
    path: Path
    metrics: dict[str, Any]


@dataclass(frozen=True)
class GateOutcome:
    passed: bool
    reasons: list[str]
    summary: dict[str, Any]
    golden_set: str
    report_path: Path | None


def new_run_id() -> str:
    return uuid.uuid4().hex[:16]


class Trainer(Protocol):
    def __call__(
        self,
        dataset: Dataset,
        on_progress: Callable[[TrainingProgress], None],
        cancel: threading.Event,
    ) -> TrainedAdapter: ...


class Gate(Protocol):
    def __call__(self, candidate: Adapter, production: Route) -> GateOutcome: ...


@dataclass(frozen=True)
class LoopSettings:
    datasets_dir: Path
    lock_dir: Path
    golden_prompts: tuple[str, ...] = ()
    judged_min_score: float = 4.0  # captured answers judged at least this good become examples
    max_examples: int = 2000
    min_examples: int = 20  # a run whose labels fall below this after the teacher is suppressed
    dataset: DatasetSettings = field(default_factory=DatasetSettings)
    auto_deploy: bool = True
    prices: ComputePrices = field(default_factory=ComputePrices)
    train_cpus: float = 1.0  # what the trainer holds while it runs (its threads, or Ray's ask)
    train_gpus: float = 0.0


@dataclass
class RunResult:
    run_id: str
    status: str
    reason: str
    adapter: Adapter | None = None
    gate: GateOutcome | None = None
    timeline: list[dict[str, Any]] = field(default_factory=list)


class StageError(RuntimeError):
    """A stage failed; the message names the stage and the cause."""


class TooFewExamples(RuntimeError):
    """The run has fewer examples than ``min_examples``: it ends suppressed, not failed."""


class RetrainLoop:
    def __init__(
        self,
        store: Store,
        adapters: AdapterRegistry,
        deployer: Deployer,
        triggers: Triggers,
        metrics: LoopMetrics,
        settings: LoopSettings,
        trainer: Trainer,
        gate: Gate,
        aliases: Callable[[], list[str]],
        guard: PostDeployGuard | None = None,
        canary: CanaryRelease | None = None,
        teacher: Teacher | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.store = store
        self.adapters = adapters
        self.deployer = deployer
        self.triggers = triggers
        self.metrics = metrics
        self.settings = settings
        self.trainer = trainer
        self.gate = gate
        self.aliases = aliases
        self.guard = guard
        self.canary = canary
        self.teacher = teacher
        self.clock = clock
        self.runs = RunLog(store, clock)
        self.active = ActiveRuns()

    # --- entry points -------------------------------------------------------------------------

    def tick(self) -> dict[str, RunResult | TriggerDecision]:
        """The scheduled job: guard fresh deploys, evaluate every alias's triggers, run if tripped."""
        out: dict[str, RunResult | TriggerDecision] = {}
        for alias in self.aliases():
            if self.canary is not None and self.canary.check(alias) == "watching":
                continue  # live data has not decided yet: no new run meanwhile
            if self.guard is not None and (route := self.guard.check(alias)) is not None:
                log.warning(
                    "%s rolled back to %s by the post-deploy guard", alias, route.served_name
                )
            decision = self.triggers.evaluate(alias)
            out[alias] = self.run(alias, decision) if decision.should_run else decision
        return out

    def run(
        self,
        alias: str,
        decision: TriggerDecision,
        actor: str = "loop",
        run_id: str | None = None,
    ) -> RunResult:
        """One retrain run for ``alias`` (under ``run_id`` when the caller named it first, e.g.
        to answer an API call before the run starts); holds the alias's run lock throughout."""
        lock = RunLock(self.settings.lock_dir, alias)
        if not lock.acquire():
            return RunResult("", "suppressed", "a retrain run is already in progress")
        try:
            return self._run_locked(alias, decision, actor, run_id or new_run_id())
        finally:
            lock.release()

    def cancel(self, run_id: str, actor: str, reason: str) -> str:
        """Stop a run in progress (``RunNotActiveError`` when it is not); returns its alias."""
        return self.active.cancel(run_id, actor, reason)

    def reconcile(self, alias: str) -> Route:
        """After a (re)start: fail the runs it interrupted, then route the alias as registered."""
        self.runs.fail_interrupted(alias)
        route = self.deployer.reconcile(alias)
        if self.canary is not None:
            self.canary.restore(alias)
        return route

    def register_seed_dataset(self, alias: str, path: Path) -> Dataset | None:
        """Make the production model's own training data the alias's first replay pool (once)."""
        if has_dataset(self.store, alias):
            return None
        examples = [
            {**row, "source": "seed", "ref": f"seed:{i}"} for i, row in enumerate(iter_jsonl(path))
        ]
        dataset = build_dataset(
            self.settings.datasets_dir / alias,
            examples,
            golden_prompts=self.settings.golden_prompts,
            settings=self.settings.dataset,
        )
        record_dataset(self.store, alias, dataset, self.clock())
        log.info("seed dataset %s registered for %s from %s", dataset.id, alias, path)
        return dataset

    # --- the stages ---------------------------------------------------------------------------

    def _run_locked(
        self, alias: str, decision: TriggerDecision, actor: str, run_id: str
    ) -> RunResult:
        result = RunResult(run_id, "running", decision.reason)
        self.runs.start(
            result.run_id,
            alias,
            decision.trigger,
            decision.reason,
            drift_run_id=decision.drift_run_id,
        )
        self.triggers.record(alias, decision, run_id=result.run_id)
        self.metrics.running.labels(model=alias).set(1)
        log.info("retrain %s of %s started: %s", result.run_id, alias, decision.reason)
        self.active.start(result.run_id, alias)
        try:
            labels = self._teacher_stage(result, alias, decision)
            dataset = self._dataset_stage(result, alias, labels)
            candidate = self._train_stage(result, alias, dataset)
            outcome = self._gate_stage(result, alias, candidate)
            if not outcome.passed:
                result.adapter = self.adapters.transition(
                    candidate.id,
                    Status.REJECTED,
                    actor="loop",
                    reason="gate: " + "; ".join(outcome.reasons),
                )
                self.deployer.unload(candidate.served_name)
                return self._end(result, alias, "rejected", result.adapter)
            staged = self.adapters.transition(
                candidate.id, Status.STAGING, actor="loop", reason="gate passed"
            )
            result.adapter = staged
            pinned = pinned_adapter(self.store, alias)
            if pinned or not self.settings.auto_deploy:
                why = f"pinned to {pinned}" if pinned else "auto_deploy is off"
                self._note(result, f"{staged.served_name} stays in staging: {why}")
                return self._end(result, alias, "staged", staged)
            if self.canary is not None and self.canary.settings.enabled:
                with self._stage(result, Stage.DEPLOY) as note:
                    self.canary.start(staged, actor=actor, reason=f"retrain {result.run_id}")
                    note(f"{staged.served_name} serves a canary share of {alias}")
                return self._end(result, alias, "canary", staged)
            shipped = self._deploy_stage(result, alias, staged, decision, actor)
            return self._end(result, alias, "shipped", shipped)
        except TooFewExamples as exc:
            result.reason = f"{decision.reason}; suppressed: {exc}"
            self.runs.update(result.run_id, error=str(exc))
            return self._end(result, alias, "suppressed", None)
        except RunCancelled as exc:
            return self._cancelled(result, alias, exc)
        except Exception as exc:
            log.exception("retrain %s of %s failed", result.run_id, alias)
            return self._fail(result, alias, exc)
        finally:
            self.active.finish(result.run_id)

    def _teacher_stage(
        self, result: RunResult, alias: str, decision: TriggerDecision
    ) -> TeacherLabels | None:
        """On a drift trigger, with a teacher configured: label the prompts that drifted."""
        if self.teacher is None or decision.drift_run_id is None:
            return None
        with self._stage(result, Stage.TEACHER) as note:
            labels = self.teacher.label(alias, result.run_id, decision.drift_run_id)
            note(labels.note())
            result.timeline[-1]["teacher"] = labels.summary()
        return labels

    def _dataset_stage(
        self, result: RunResult, alias: str, labels: TeacherLabels | None
    ) -> Dataset:
        with self._stage(result, Stage.DATASET) as note:
            dataset = self._dataset(alias, labels)
            self.runs.update(result.run_id, dataset_id=dataset.id)
            counts = dataset.manifest["counts"]
            live = sum(counts.get("live_slice", {}).values())
            note(
                f"dataset {dataset.id}: {sum(counts['train'].values())} train"
                f" ({counts['train']}), {sum(counts['validation'].values())} validation,"
                f" replay share {dataset.manifest['replay']['share']:.2f}"
                + (f", {live} teacher labels held out as the gate's live slice" if live else "")
            )
        return dataset

    def _train_stage(self, result: RunResult, alias: str, dataset: Dataset) -> Adapter:
        handle = self.active.get(result.run_id)
        with self._stage(result, Stage.TRAIN) as note:
            watch = TrainingWatch(
                alias,
                self.metrics,
                result.timeline[-1],
                lambda: self.runs.update(result.run_id, timeline=json.dumps(result.timeline)),
            )
            try:
                trained = self.trainer(dataset, on_progress=watch, cancel=handle.cancelled)
            except TrainingCancelledError as exc:
                raise RunCancelled(f"cancelled by {handle.cancelled_by} ({exc})") from exc
            # kept on the result at once: a failure from here on marks this version failed
            result.adapter = self.adapters.register(
                alias,
                trained.id,
                str(trained.path),
                dataset_id=dataset.id,
                run_id=result.run_id,
            )
            adapter = self.adapters.transition(
                result.adapter.id, Status.EVALUATING, actor="loop", reason="training finished"
            )
            self.runs.update(result.run_id, adapter_id=adapter.id)
            note(f"{adapter.served_name} ({adapter.id}) trained: {_short(trained.metrics)}")
        return adapter

    def _gate_stage(self, result: RunResult, alias: str, candidate: Adapter) -> GateOutcome:
        with self._stage(result, Stage.GATE) as note:
            production = self.deployer.current(alias)
            outcome = self.gate(candidate, production)
            result.gate = outcome
            record_evaluation(
                self.store,
                candidate.id,
                golden_set=outcome.golden_set,
                passed=outcome.passed,
                summary={"reasons": outcome.reasons, **outcome.summary},
                report_path=outcome.report_path,
                created_at=self.clock(),
            )
            verdict = "passed" if outcome.passed else "rejected"
            self.metrics.gate_decisions.labels(model=alias, decision=verdict).inc()
            note(f"gate {verdict} vs {production.served_name}: " + "; ".join(outcome.reasons))
        return outcome

    def _deploy_stage(
        self,
        result: RunResult,
        alias: str,
        staged: Adapter,
        decision: TriggerDecision,
        actor: str,
    ) -> Adapter | None:
        with self._stage(result, Stage.DEPLOY) as note:
            route = self.deployer.deploy(
                staged, actor=actor, reason=f"retrain {result.run_id}: {decision.reason}"
            )
            note(f"{alias} now routes to {route.served_name}")
        return route.adapter

    def _cancelled(self, result: RunResult, alias: str, exc: RunCancelled) -> RunResult:
        """End a cancelled run: a version not yet past the gate fails; a staged one stays staged
        (an operator may still promote it)."""
        adapter = result.adapter and self.adapters.get(result.adapter.id)
        if adapter is not None and adapter.status in (Status.TRAINING, Status.EVALUATING):
            adapter = self.adapters.transition(  # trained, not yet gated: never loaded into vLLM
                adapter.id, Status.FAILED, actor="loop", reason=str(exc)[:500]
            )
        self.runs.update(result.run_id, error=str(exc)[:2000])
        return self._end(result, alias, "cancelled", adapter)

    def _fail(self, result: RunResult, alias: str, exc: Exception) -> RunResult:
        adapter = result.adapter
        if adapter is not None:
            current = self.adapters.get(adapter.id)
            if current.status in (Status.TRAINING, Status.EVALUATING, Status.STAGING):
                adapter = self.adapters.transition(
                    adapter.id, Status.FAILED, actor="loop", reason=str(exc)[:500]
                )
        self.runs.update(result.run_id, error=f"{type(exc).__name__}: {exc}"[:2000])
        return self._end(result, alias, "failed", adapter)

    def _dataset(self, alias: str, labels: TeacherLabels | None) -> Dataset:
        s = self.settings
        examples = training_examples(self.store, alias, s.judged_min_score, s.max_examples)
        if labels is not None:
            examples += labels.examples
            if len(examples) < s.min_examples:
                raise TooFewExamples(
                    f"only {len(examples)} training examples after the teacher"
                    f" ({labels.outcomes['accepted']} of {labels.prompts} drifted prompts"
                    f" accepted: {dict(sorted(labels.outcomes.items()))}), need {s.min_examples}"
                )
        dataset = build_dataset(
            s.datasets_dir / alias,
            examples,
            replay_from=dataset_ids(self.store, alias),
            golden_prompts=s.golden_prompts,
            settings=s.dataset,
            provenance={"teacher": labels.summary()} if labels is not None else None,
        )
        record_dataset(self.store, alias, dataset, self.clock())
        return dataset

    # --- bookkeeping --------------------------------------------------------------------------

    @contextmanager
    def _stage(self, result: RunResult, stage: Stage) -> Iterator[Callable[[str], None]]:
        """Time a stage, keep its notes, and write the timeline after it (crash-visible). A
        cancelled run starts no further stage."""
        self.active.get(result.run_id).check()
        entry: dict[str, Any] = {"stage": stage.value, "started_at": self.clock().isoformat()}
        notes: list[str] = []
        result.timeline.append(entry)
        self.runs.update(result.run_id, stage=stage.value)
        started = time.perf_counter()
        try:
            yield notes.append
        except TooFewExamples as exc:
            notes.append(f"suppressed: {exc}")
            raise
        except RunCancelled as exc:
            notes.append(str(exc))
            raise
        except Exception as exc:
            notes.append(f"failed: {type(exc).__name__}: {exc}")
            raise StageError(f"{stage.value} stage failed: {exc}") from exc
        finally:
            entry["seconds"] = round(time.perf_counter() - started, 2)
            entry["note"] = "; ".join(notes)
            self.metrics.stage_duration.labels(stage=stage.value).observe(entry["seconds"])
            self.runs.update(result.run_id, timeline=json.dumps(result.timeline))

    def _cost(self, result: RunResult, alias: str, status: str) -> None:
        """The run's compute and, with prices configured, its cost: a timeline note and metrics."""
        s = self.settings
        cost = RunCost.of(result.timeline, s.prices, cpus=s.train_cpus, gpus=s.train_gpus)
        result.timeline.append(
            {"stage": "cost", "started_at": self.clock().isoformat(), "seconds": 0.0,
             "note": cost.note(), "dollars": cost.dollars}
        )  # fmt: skip
        outcome = "shipped" if status in ("shipped", "staged") else status
        self.metrics.cost.labels(model=alias, outcome=outcome).inc(cost.dollars)
        self.metrics.compute.labels(model=alias, resource="cpu").inc(cost.train_cpu_s)
        self.metrics.compute.labels(model=alias, resource="gpu").inc(cost.train_gpu_s)

    def _note(self, result: RunResult, text: str) -> None:
        result.timeline.append(
            {"stage": "note", "started_at": self.clock().isoformat(), "seconds": 0.0, "note": text}
        )
        self.runs.update(result.run_id, timeline=json.dumps(result.timeline))

    def _end(
        self, result: RunResult, alias: str, status: str, adapter: Adapter | None
    ) -> RunResult:
        result.status = status
        result.adapter = adapter
        self._cost(result, alias, status)
        self.runs.update(
            result.run_id,
            status=status,
            finished_at=self.clock(),
            timeline=json.dumps(result.timeline),
        )
        outcome = "shipped" if status in ("shipped", "staged") else status
        self.metrics.runs.labels(model=alias, outcome=outcome).inc()
        self.metrics.running.labels(model=alias).set(0)
        log.info("retrain %s of %s ended: %s", result.run_id, alias, status)
        return result


def _short(metrics: dict[str, Any]) -> str:
    keys = ("steps", "train_loss", "eval_loss", "seconds")
    return ", ".join(
        f"{k} {metrics[k]:.3g}" if isinstance(metrics.get(k), float) else f"{k} {metrics[k]}"
        for k in keys
        if k in metrics
    )
