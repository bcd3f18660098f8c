"""Prometheus metrics of the retrain loop: triggers, runs, stages, the gate, deployments.

Labels are bounded: ``model`` is a configured alias, ``trigger``/``decision``/``outcome``/``stage``
come from the enums below, ``adapter`` only ever carries the currently deployed version per alias.
"""

from __future__ import annotations

from enum import StrEnum

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

STAGE_BUCKETS = (1, 2.5, 5, 10, 20, 30, 60, 120, 300, 600, 1800, 3600)


class Stage(StrEnum):
    TEACHER = "teacher"
    DATASET = "dataset"
    TRAIN = "train"
    GATE = "gate"
    DEPLOY = "deploy"


class LoopMetrics:
    """All retrain-loop metrics, registered on the registry passed in."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.trigger_decisions = Counter(
            "driftloop_retrain_trigger_decisions_total",
            "Trigger evaluations by trigger (drift, quality, volume, schedule, manual, none) and"
            " decision (triggered, not_triggered, suppressed, dry_run).",
            ["model", "trigger", "decision"],
            registry=registry,
        )
        self.runs = Counter(
            "driftloop_retrain_runs_total",
            "Finished retrain runs by outcome (shipped, rejected, failed, canary: serving a canary"
            " share, suppressed: too few labels after the teacher, cancelled: by an operator); a"
            " run left in staging (pinned alias, auto_deploy off) counts as shipped.",
            ["model", "outcome"],
            registry=registry,
        )
        self.running = Gauge(
            "driftloop_retrain_running",
            "1 while a retrain run for the model is in progress.",
            ["model"],
            registry=registry,
        )
        self.training_step = Gauge(
            "driftloop_training_step",
            "The training step the model's current (or last) run reached.",
            ["model"],
            registry=registry,
        )
        self.training_loss = Gauge(
            "driftloop_training_loss",
            "Training loss at the last step the trainer reported.",
            ["model"],
            registry=registry,
        )
        self.training_rate = Gauge(
            "driftloop_training_steps_per_second",
            "Training speed at the last step the trainer reported.",
            ["model"],
            registry=registry,
        )
        self.paused = Gauge(
            "driftloop_retrain_paused",
            "1 while automatic retraining of the model is paused by an operator.",
            ["model"],
            registry=registry,
        )
        self.stage_duration = Histogram(
            "driftloop_retrain_stage_duration_seconds",
            "Time spent in each stage of a retrain run (teacher, dataset, train, gate, deploy).",
            ["stage"],
            buckets=STAGE_BUCKETS,
            registry=registry,
        )
        self.gate_decisions = Counter(
            "driftloop_gate_decisions_total",
            "Golden-set gate verdicts on candidate adapters (passed, rejected).",
            ["model", "decision"],
            registry=registry,
        )
        self.deployed = Gauge(
            "driftloop_deployed_adapter_info",
            "1 for the adapter version the alias currently routes to (base when none).",
            ["model", "adapter"],
            registry=registry,
        )
        self.rollbacks = Counter(
            "driftloop_rollbacks_total",
            "Rollbacks to the previous production adapter (manual, automatic).",
            ["model", "reason"],
            registry=registry,
        )
        self.cost = Counter(
            "driftloop_retrain_cost_dollars_total",
            "What finished runs cost at retrain.price_per_cpu_hour / price_per_gpu_hour (the"
            " trainer's compute), by outcome.",
            ["model", "outcome"],
            registry=registry,
        )
        self.compute = Counter(
            "driftloop_retrain_compute_seconds_total",
            "CPU- and GPU-seconds the trainer held in finished runs (resource: cpu, gpu).",
            ["model", "resource"],
            registry=registry,
        )
        self.canary_share = Gauge(
            "driftloop_canary_share",
            "Share of the alias's conversations a running canary gets (0: none runs).",
            ["model"],
            registry=registry,
        )
        self.canary_decisions = Counter(
            "driftloop_canary_decisions_total",
            "Canary releases decided: promoted, rolled_back (live data was worse), aborted.",
            ["model", "decision"],
            registry=registry,
        )
