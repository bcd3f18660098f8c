"""What a training run is: its spec and operator caps, progress reports, result and errors.

Shared by the parent (``retrain.training.job``) and the child (``retrain.training.train``), so the
child imports neither the subprocess plumbing nor the parent's logging.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from retrain.training.adapters import AdapterInfo

# Lines the child prints for the parent start with this; everything else is library output.
EVENT_PREFIX = "@@driftloop-train "

# sft: learn the wanted answers; dpo: learn to prefer them over the rejected ones (pairs only)
METHODS = ("sft", "dpo")


class TrainingError(RuntimeError):
    """Training failed; the message names the exit status and the child's last output lines."""

    def __init__(
        self,
        message: str,
        *,
        exit_code: int | None = None,
        last_lines: Sequence[str] = (),
        pid: int | None = None,
    ):
        super().__init__(message)
        self.exit_code = exit_code
        self.last_lines = list(last_lines)
        self.pid = pid  # the training subprocess, when one was started


class TrainingTimeoutError(TrainingError):
    """Training ran past its time limit and was killed."""


class TrainingCancelledError(TrainingError):
    """The caller cancelled training and the subprocess was killed."""


@dataclass(frozen=True)
class TrainingLimits:
    """Operator-set caps that no spec may exceed (against runaway or forgetful updates)."""

    max_learning_rate: float = 1e-3
    max_steps: int = 2000
    max_rank: int = 64
    max_time_limit_s: float = 3600.0


@dataclass(frozen=True)
class TrainingSpec:
    """Everything the training subprocess needs; written to JSON for it."""

    base_model: Path  # a Hugging Face model folder (see retrain.training.base_models)
    dataset: Path  # a dataset folder written by retrain.data.dataset (<root>/<dataset id>)
    output_root: Path  # adapters are published as <output_root>/<digest>/
    rank: int = 8
    alpha: int = 16
    dropout: float = 0.05
    target_modules: tuple[str, ...] = ("q_proj", "v_proj")
    learning_rate: float = 2e-4
    max_steps: int = 30
    batch_size: int = 4
    max_length: int = 256  # tokens per example; longer ones are truncated
    seed: int = 0
    time_limit_s: float = 600.0  # wall clock for the whole subprocess, model loading included
    threads: int = 1  # torch intra-op threads: training must leave cores to serving
    niceness: int = 10  # added to the child's nice value, so serving wins the CPU
    method: str = "sft"  # one of METHODS
    dpo_beta: float = 0.1  # how far DPO may move from the reference model (smaller: farther)
    # DPO's reference model: the production adapter on the base model, or None for the base
    # itself. The new adapter starts from it, so its rank must equal ``rank``.
    reference_adapter: Path | None = None

    def __post_init__(self) -> None:
        for name in ("base_model", "dataset", "output_root", "reference_adapter"):
            # absolute: the child runs in a scratch folder, and the paths outlive this process
            if getattr(self, name) is not None:
                object.__setattr__(self, name, Path(getattr(self, name)).absolute())
        object.__setattr__(self, "target_modules", tuple(self.target_modules))
        positive = ("rank", "alpha", "max_steps", "batch_size", "max_length", "threads")
        for name in positive:
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"TrainingSpec.{name}: must be a positive integer, got {value!r}")
        if self.method not in METHODS:
            raise ValueError(f"TrainingSpec.method: {self.method!r} is not one of {METHODS}")
        if self.reference_adapter is not None and self.method != "dpo":
            raise ValueError("TrainingSpec.reference_adapter: only a dpo run has a reference model")
        checks = {
            "learning_rate": self.learning_rate > 0.0 and math.isfinite(self.learning_rate),
            "dropout": 0.0 <= self.dropout < 1.0,
            "time_limit_s": self.time_limit_s > 0.0 and math.isfinite(self.time_limit_s),
            "niceness": isinstance(self.niceness, int) and 0 <= self.niceness <= 19,
            "seed": isinstance(self.seed, int) and not isinstance(self.seed, bool),
            "dpo_beta": isinstance(self.dpo_beta, int | float) and 0.0 < self.dpo_beta <= 10.0,
            "target_modules": bool(self.target_modules)
            and all(isinstance(m, str) and m.isidentifier() for m in self.target_modules),
        }
        for name, ok in checks.items():
            if not ok:
                raise ValueError(f"TrainingSpec.{name}: invalid value {getattr(self, name)!r}")

    def check_limits(self, limits: TrainingLimits) -> None:
        """Raise TrainingError naming the first field above its configured cap."""
        caps = (
            ("learning_rate", self.learning_rate, limits.max_learning_rate),
            ("max_steps", self.max_steps, limits.max_steps),
            ("rank", self.rank, limits.max_rank),
            ("time_limit_s", self.time_limit_s, limits.max_time_limit_s),
        )
        for name, value, cap in caps:
            if value > cap:
                raise TrainingError(f"TrainingSpec.{name}={value} exceeds the configured cap {cap}")

    def to_json(self) -> str:
        data = asdict(self)
        paths = ("base_model", "dataset", "output_root", "reference_adapter")
        data.update({k: str(getattr(self, k)) for k in paths if getattr(self, k) is not None})
        data["target_modules"] = list(self.target_modules)
        return json.dumps(data, indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> TrainingSpec:
        data = json.loads(text)
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"TrainingSpec: unknown fields {unknown}")
        return cls(**data)


@dataclass(frozen=True)
class TrainingProgress:
    """One progress report from the child (a training step, or a phase change)."""

    pid: int
    phase: str  # loading, training, evaluating, saving
    step: int = 0
    max_steps: int = 0
    loss: float | None = None
    learning_rate: float | None = None
    steps_per_second: float | None = None
    elapsed_s: float = 0.0


@dataclass(frozen=True)
class TrainingResult:
    """A finished training run: the validated adapter and its metrics."""

    adapter_path: Path
    adapter: AdapterInfo
    steps: int
    train_loss: float | None
    final_loss: float | None
    eval_loss: float | None
    train_seconds: float
    wall_seconds: float
    metrics: Mapping[str, Any] = field(default_factory=dict)  # everything in result.json

    @classmethod
    def of(
        cls, adapter_path: Path, adapter: AdapterInfo, metrics: Mapping[str, Any], wall_s: float
    ) -> TrainingResult:
        """The result of a validated adapter folder, from its ``result.json`` metrics."""
        return cls(
            adapter_path=adapter_path,
            adapter=adapter,
            steps=int(metrics.get("steps", 0)),
            train_loss=metrics.get("train_loss"),
            final_loss=metrics.get("final_loss"),
            eval_loss=metrics.get("eval_loss"),
            train_seconds=float(metrics.get("train_seconds", 0.0)),
            wall_seconds=round(wall_s, 3),
            metrics=metrics,
        )
