"""The retrain loop: trigger -> dataset -> LoRA training -> golden-set gate -> deployment.

Every run is a ``retrain_runs`` row whose ``timeline`` grows stage by stage (so a crash shows how
far it got), and every adapter it makes goes through the registry's statuses. The loop only
orchestrates; training and gating are passed in (``Trainer``, ``Gate``) so the composition root
decides how they run (a subprocess with the real model, or the tiny model in benchmarks).

A run ends in one of three ways: ``shipped`` (the gate passed and the alias now routes to the new
version), ``rejected`` (the gate said no: production untouched), ``failed`` (an error, named).
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from monitor.store import Store
from retrain.dataset import DatasetSettings, build_dataset
from retrain.dataset_files import Dataset
from retrain.deploy import Deployer, Route
from retrain.guard import PostDeployGuard
from retrain.metrics import LoopMetrics, Stage
from retrain.registry import Adapter, Registry, Status
from retrain.triggers import Decision, RunLock, Triggers, pinned_adapter

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


class Trainer(Protocol):
    def __call__(self, dataset: Dataset, on_progress: Callable[[str], None]) -> TrainedAdapter: ...


class Gate(Protocol):
    def __call__(self, candidate: Adapter, production: Route) -> GateOutcome: ...


@dataclass(frozen=True)
class LoopSettings:
    datasets_dir: Path
    lock_dir: Path
    golden_prompts: tuple[str, ...] = ()
    judged_min_score: float = 4.0  # captured answers judged at least this good become examples
    max_examples: int = 2000
    dataset: DatasetSettings = field(default_factory=DatasetSettings)
    auto_deploy: bool = True


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


class RetrainLoop:
    def __init__(
        self,
        store: Store,
        registry: Registry,
        deployer: Deployer,
        triggers: Triggers,
        metrics: LoopMetrics,
        settings: LoopSettings,
        trainer: Trainer,
        gate: Gate,
        aliases: Callable[[], list[str]],
        guard: PostDeployGuard | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.store = store
        self.registry = registry
        self.deployer = deployer
        self.triggers = triggers
        self.metrics = metrics
        self.settings = settings
        self.trainer = trainer
        self.gate = gate
        self.aliases = aliases
        self.guard = guard
        self.clock = clock

    # --- entry points -------------------------------------------------------------------------

    def tick(self) -> dict[str, RunResult | Decision]:
        """The scheduled job: guard fresh deploys, evaluate every alias's triggers, run if tripped."""
        out: dict[str, RunResult | Decision] = {}
        for alias in self.aliases():
            if self.guard is not None and (route := self.guard.check(alias)) is not None:
                log.warning(
                    "%s rolled back to %s by the post-deploy guard", alias, route.served_name
                )
            decision = self.triggers.evaluate(alias)
            out[alias] = self.run(alias, decision) if decision.should_run else decision
        return out

    def run(self, alias: str, decision: Decision, actor: str = "loop") -> RunResult:
        """One retrain run for ``alias``; holds the alias's run lock throughout."""
        lock = RunLock(self.settings.lock_dir, alias)
        if not lock.acquire():
            return RunResult("", "suppressed", "a retrain run is already in progress")
        try:
            return self._run_locked(alias, decision, actor)
        finally:
            lock.release()

    # --- the stages ---------------------------------------------------------------------------

    def _run_locked(self, alias: str, decision: Decision, actor: str) -> RunResult:
        result = RunResult(uuid.uuid4().hex[:16], "running", decision.reason)
        self.store.query(
            "INSERT INTO retrain_runs (id, model_alias, trigger, reason, started_at, status,"
            " drift_run_id, timeline) VALUES (?, ?, ?, ?, ?, 'running', ?, '[]')",
            [
                result.run_id,
                alias,
                decision.trigger,
                decision.reason,
                self.clock(),
                decision.drift_run_id,
            ],
        )
        self.triggers.record(alias, decision, run_id=result.run_id)
        self.metrics.running.labels(model=alias).set(1)
        log.info("retrain %s of %s started: %s", result.run_id, alias, decision.reason)
        adapter: Adapter | None = None
        try:
            with self._stage(result, Stage.DATASET) as note:
                dataset = self._dataset(alias)
                self._update(result.run_id, dataset_id=dataset.id)
                counts = dataset.manifest["counts"]
                note(
                    f"dataset {dataset.id}: {sum(counts['train'].values())} train"
                    f" ({counts['train']}), {sum(counts['validation'].values())} validation,"
                    f" replay share {dataset.manifest['replay']['share']:.2f}"
                )
            with self._stage(result, Stage.TRAIN) as note:
                trained = self.trainer(dataset, on_progress=lambda line: log.info("%s", line))
                adapter = self.registry.register(
                    alias,
                    trained.id,
                    str(trained.path),
                    dataset_id=dataset.id,
                    run_id=result.run_id,
                )
                self.registry.transition(
                    adapter.id, Status.EVALUATING, actor="loop", reason="training finished"
                )
                self._update(result.run_id, adapter_id=adapter.id)
                note(f"{adapter.served_name} ({adapter.id}) trained: {_short(trained.metrics)}")
            with self._stage(result, Stage.GATE) as note:
                production = self.deployer.current(alias)
                outcome = self.gate(adapter, production)
                result.gate = outcome
                self._store_evaluation(adapter, outcome)
                verdict = "passed" if outcome.passed else "rejected"
                self.metrics.gate_decisions.labels(model=alias, decision=verdict).inc()
                note(f"gate {verdict} vs {production.served_name}: " + "; ".join(outcome.reasons))
            if not outcome.passed:
                adapter = self.registry.transition(
                    adapter.id,
                    Status.REJECTED,
                    actor="loop",
                    reason="gate: " + "; ".join(outcome.reasons),
                )
                self.deployer.admin.unload(adapter.served_name)
                return self._end(result, alias, "rejected", adapter)
            adapter = self.registry.transition(
                adapter.id, Status.STAGING, actor="loop", reason="gate passed"
            )
            pinned = pinned_adapter(self.store, alias)
            if pinned or not self.settings.auto_deploy:
                why = f"pinned to {pinned}" if pinned else "auto_deploy is off"
                self._note(result, f"{adapter.served_name} stays in staging: {why}")
                return self._end(result, alias, "staged", adapter)
            with self._stage(result, Stage.DEPLOY) as note:
                route = self.deployer.deploy(
                    adapter, actor=actor, reason=f"retrain {result.run_id}: {decision.reason}"
                )
                adapter = route.adapter
                note(f"{alias} now routes to {route.served_name}")
            return self._end(result, alias, "shipped", adapter)
        except Exception as exc:
            log.exception("retrain %s of %s failed", result.run_id, alias)
            if adapter is not None:
                current = self.registry.get(adapter.id)
                if current.status in (Status.TRAINING, Status.EVALUATING, Status.STAGING):
                    adapter = self.registry.transition(
                        adapter.id, Status.FAILED, actor="loop", reason=str(exc)[:500]
                    )
            self._update(result.run_id, error=f"{type(exc).__name__}: {exc}"[:2000])
            return self._end(result, alias, "failed", adapter)

    def _dataset(self, alias: str) -> Dataset:
        examples = training_examples(
            self.store, alias, self.settings.judged_min_score, self.settings.max_examples
        )
        earlier = [
            row[0]
            for row in self.store.query(
                "SELECT id FROM datasets WHERE model_alias = ? ORDER BY created_at", [alias]
            )
        ]
        dataset = build_dataset(
            self.settings.datasets_dir / alias,
            examples,
            replay_from=earlier,
            golden_prompts=self.settings.golden_prompts,
            settings=self.settings.dataset,
        )
        self.store.query(
            "INSERT OR IGNORE INTO datasets (id, model_alias, created_at, path, manifest)"
            " VALUES (?, ?, ?, ?, ?)",
            [dataset.id, alias, self.clock(), str(dataset.path), json.dumps(dataset.manifest)],
        )
        return dataset

    def _store_evaluation(self, adapter: Adapter, outcome: GateOutcome) -> None:
        self.store.query(
            "INSERT INTO evaluations (id, adapter_id, created_at, golden_set, passed, summary,"
            " report_path) VALUES (?, ?, ?, ?, ?, ?, ?)",
            [
                uuid.uuid4().hex[:16],
                adapter.id,
                self.clock(),
                outcome.golden_set,
                outcome.passed,
                json.dumps({"reasons": outcome.reasons, **outcome.summary}),
                str(outcome.report_path) if outcome.report_path else None,
            ],
        )

    # --- bookkeeping --------------------------------------------------------------------------

    @contextmanager
    def _stage(self, result: RunResult, stage: Stage) -> Iterator[Callable[[str], None]]:
        """Time a stage, keep its notes, and write the timeline after it (crash-visible)."""
        entry: dict[str, Any] = {"stage": stage.value, "started_at": self.clock().isoformat()}
        notes: list[str] = []
        result.timeline.append(entry)
        self._update(result.run_id, stage=stage.value)
        started = time.perf_counter()
        try:
            yield notes.append
        except Exception as exc:
            notes.append(f"failed: {type(exc).__name__}: {exc}")
            raise StageError(f"{stage.value} stage failed: {exc}") from exc
        finally:
            entry["seconds"] = round(time.perf_counter() - started, 2)
            entry["note"] = "; ".join(notes)
            self.metrics.stage_duration.labels(stage=stage.value).observe(entry["seconds"])
            self._update(result.run_id, timeline=json.dumps(result.timeline))

    def _note(self, result: RunResult, text: str) -> None:
        result.timeline.append(
            {"stage": "note", "started_at": self.clock().isoformat(), "seconds": 0.0, "note": text}
        )
        self._update(result.run_id, timeline=json.dumps(result.timeline))

    def _end(
        self, result: RunResult, alias: str, status: str, adapter: Adapter | None
    ) -> RunResult:
        result.status = status
        result.adapter = adapter
        self._update(
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

    def _update(self, run_id: str, **columns: Any) -> None:
        # Column names come from this module's keyword arguments only, never from input.
        assignments = ", ".join(f"{name} = ?" for name in columns)
        self.store.query(
            f"UPDATE retrain_runs SET {assignments} WHERE id = ?", [*columns.values(), run_id]
        )


FEEDBACK_ROWS = "FROM feedback WHERE model_alias = ?"
# captured answers whose mean judge score reaches the bar (parameters: alias, bar)
JUDGED_ROWS = (
    "FROM requests r"
    " JOIN (SELECT request_id, avg(score) AS score FROM judgments"
    "       WHERE source = 'traffic' AND outcome = 'scored' GROUP BY request_id) j"
    "   ON j.request_id = r.request_id"
    " WHERE r.model_alias = ? AND j.score >= ? AND r.response_text <> ''"
)


def training_examples(
    store: Store, alias: str, judged_min_score: float, limit: int
) -> list[dict[str, Any]]:
    """Operator feedback (newest first), then captured answers the judges scored highly."""
    feedback = store.query(
        f"SELECT id, prompt, answer {FEEDBACK_ROWS} ORDER BY received_at DESC LIMIT ?",
        [alias, limit],
    )
    judged = store.query(
        f"SELECT r.request_id, r.prompt_text, r.response_text {JUDGED_ROWS}"
        " ORDER BY r.started_at DESC LIMIT ?",
        [alias, judged_min_score, max(0, limit - len(feedback))],
    )
    return [
        {
            "messages": [
                {"role": "user", "content": prompt},
                {"role": "assistant", "content": answer},
            ],
            "source": source,
            "ref": ref,
        }
        for source, rows in (("feedback", feedback), ("judged", judged))
        for ref, prompt, answer in rows
    ]


def count_examples(store: Store, alias: str, judged_min_score: float) -> int:
    """How many examples a dataset for ``alias`` could start from (before filtering)."""
    [(count,)] = store.query(
        f"SELECT (SELECT count(*) {FEEDBACK_ROWS}) + (SELECT count(*) {JUDGED_ROWS})",
        [alias, alias, judged_min_score],
    )
    return int(count)


def _short(metrics: dict[str, Any]) -> str:
    keys = ("steps", "train_loss", "eval_loss", "seconds")
    return ", ".join(
        f"{k} {metrics[k]:.3g}" if isinstance(metrics.get(k), float) else f"{k} {metrics[k]}"
        for k in keys
        if k in metrics
    )
