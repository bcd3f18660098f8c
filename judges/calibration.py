"""How far a judge agrees with human labels: exact and ±1 agreement, quadratic-weighted kappa.

Unparseable or failed verdicts count as disagreements in the agreement rates (a judge that
answers nothing does not look good) and are left out of kappa, which needs two ratings; the
parsed share is reported beside it, and a judge below either bar is flagged.

>>> a = agreement([1, 5, 5, 1], [1, 5, 4, None])
>>> a.exact, a.within_one, a.parsed
(0.5, 0.75, 0.75)
"""

from __future__ import annotations

import asyncio
import math
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from judges.examples import Example
from judges.plugins import Judge
from judges.verdict import SCALE_MAX, SCALE_MIN, Verdict


@dataclass(frozen=True)
class Agreement:
    n: int
    parsed: float  # share of items with a score
    exact: float  # share of all items whose score equals the label
    within_one: float  # share of all items within one point of the label
    kappa: float | None  # quadratic-weighted Cohen's kappa over parsed items; None if undefined


@dataclass
class CalibrationReport:
    judge: str
    judge_model: str | None
    rubric_version: str
    agreement: Agreement
    min_kappa: float
    min_parsed: float
    tokens: int
    outcomes: dict[str, int] = field(default_factory=dict)
    items: list[dict[str, Any]] = field(default_factory=list)

    @property
    def flagged(self) -> bool:
        a = self.agreement
        return a.kappa is None or a.kappa < self.min_kappa or a.parsed < self.min_parsed

    def summary(self) -> str:
        a = self.agreement
        kappa = "undefined" if a.kappa is None else f"{a.kappa:.3f}"
        verdict = (
            f"FLAGGED: below the bar (kappa >= {self.min_kappa}, parsed >= {self.min_parsed})"
            if self.flagged
            else f"ok: meets the bar (kappa >= {self.min_kappa}, parsed >= {self.min_parsed})"
        )
        return (
            f"judge {self.judge} ({self.judge_model}, rubric {self.rubric_version}) on {a.n} items: "
            f"exact {a.exact:.3f}, within one {a.within_one:.3f}, weighted kappa {kappa}, "
            f"parsed {a.parsed:.3f}, tokens {self.tokens}\n{verdict}"
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "judge": self.judge,
            "judge_model": self.judge_model,
            "rubric_version": self.rubric_version,
            **asdict(self.agreement),
            "flagged": self.flagged,
            "min_kappa": self.min_kappa,
            "min_parsed": self.min_parsed,
            "tokens": self.tokens,
            "outcomes": self.outcomes,
        }


def agreement(labels: Sequence[int], scores: Sequence[float | None]) -> Agreement:
    """Agreement of judge ``scores`` (None = no score) with integer ``labels`` on the 1-5 scale."""
    if len(labels) != len(scores):
        raise ValueError(f"{len(labels)} labels but {len(scores)} scores")
    if not labels:
        raise ValueError("agreement needs at least one labelled item")
    n = len(labels)
    pairs = [(int(lab), int(s)) for lab, s in zip(labels, scores, strict=True) if s is not None]
    exact = sum(1 for lab, s in pairs if lab == s) / n
    within = sum(1 for lab, s in pairs if abs(lab - s) <= 1) / n
    return Agreement(n, len(pairs) / n, exact, within, weighted_kappa(pairs))


def weighted_kappa(pairs: Sequence[tuple[int, int]]) -> float | None:
    """Quadratic-weighted Cohen's kappa (scikit-learn) over the full 1-5 scale."""
    if not pairs:
        return None
    from sklearn.metrics import cohen_kappa_score  # heavy import, only when calibrating

    labels, scores = zip(*pairs, strict=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # 0/0 when both sides are constant
        kappa = cohen_kappa_score(
            labels, scores, weights="quadratic", labels=list(range(SCALE_MIN, SCALE_MAX + 1))
        )
    return None if math.isnan(kappa) else float(kappa)


async def judge_examples(
    judge: Judge, examples: Sequence[Example], concurrency: int = 4
) -> list[Verdict]:
    """Verdicts of ``judge`` on every example, in order (no cache, no store: a measurement)."""
    semaphore = asyncio.Semaphore(concurrency)

    async def one(example: Example) -> Verdict:
        async with semaphore:
            return await judge.evaluate(example.prompt, example.response)

    async with judge.session():
        return list(await asyncio.gather(*(one(e) for e in examples)))


def calibrate(
    judge: Judge,
    examples: Sequence[Example],
    *,
    min_kappa: float,
    min_parsed: float = 0.9,
    concurrency: int = 4,
) -> CalibrationReport:
    """Run ``judge`` over labelled ``examples`` and compare its scores with the labels."""
    if any(e.label is None for e in examples):
        raise ValueError("calibration needs a label on every example")
    verdicts = asyncio.run(judge_examples(judge, examples, concurrency))
    labels = [int(e.label) for e in examples if e.label is not None]
    outcomes: dict[str, int] = {}
    for v in verdicts:
        outcomes[v.outcome.value] = outcomes.get(v.outcome.value, 0) + 1
    return CalibrationReport(
        judge=judge.name,
        judge_model=next((v.judge_model for v in verdicts if v.judge_model), judge.judge_model),
        rubric_version=judge.version,
        agreement=agreement(labels, [v.score for v in verdicts]),
        min_kappa=min_kappa,
        min_parsed=min_parsed,
        tokens=sum(v.tokens for v in verdicts),
        outcomes=outcomes,
        items=[
            {
                "id": e.id,
                "label": e.label,
                "score": v.score,
                "outcome": v.outcome.value,
                "reason": v.reason,
                "raw": v.raw,
            }
            for e, v in zip(examples, verdicts, strict=True)
        ],
    )
