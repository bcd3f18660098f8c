"""What a retrain run cost: the trainer's compute seconds, times the configured prices.

The trainer holds ``cpus`` CPUs and ``gpus`` GPUs for the train stage's wall time (the local
executor: its threads; Ray: what the task asked for). The gate's golden-set generation runs on a
vLLM that serves anyway, so only its wall seconds are recorded, at no price.

>>> RunCost.of([{"stage": "train", "seconds": 1800.0}, {"stage": "gate", "seconds": 40.0}],
...            ComputePrices(gpu_per_hour=0.18), cpus=1, gpus=1).dollars
0.09
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class ComputePrices:
    cpu_per_hour: float = 0.0
    gpu_per_hour: float = 0.0


@dataclass(frozen=True)
class RunCost:
    train_cpu_s: float
    train_gpu_s: float
    gate_s: float
    dollars: float

    @classmethod
    def of(
        cls,
        timeline: Iterable[Mapping[str, Any]],
        prices: ComputePrices,
        *,
        cpus: float,
        gpus: float,
    ) -> RunCost:
        seconds: dict[str, float] = {}
        for entry in timeline:
            stage = str(entry.get("stage"))
            seconds[stage] = seconds.get(stage, 0.0) + float(entry.get("seconds") or 0.0)
        train = seconds.get("train", 0.0)
        dollars = (train * cpus * prices.cpu_per_hour + train * gpus * prices.gpu_per_hour) / 3600
        return cls(
            round(train * cpus, 2), round(train * gpus, 2), seconds.get("gate", 0.0),
            round(dollars, 6),
        )  # fmt: skip

    def note(self) -> str:
        return (
            f"cost ${self.dollars:.4f}: train {self.train_cpu_s:g} CPU-s and"
            f" {self.train_gpu_s:g} GPU-s; gate {self.gate_s:g} s on the serving vLLM (unpriced)"
        )
