"""The LLM judge in the gate: pairwise, candidate vs production, only when it is trustworthy.

Trust comes from the calibration on record for exactly this judge (name, model, rubric version;
``judges.calibration_records``). An untrusted judge is not called at all, and the report says
why ("not used: ... kappa 0.034, below the bar"); a trusted one judges every golden (and live
slice) prompt in both orders, and the candidate must not lose: its win rate (ties count half)
must reach 0.5 minus the gate's margin.
"""

from __future__ import annotations

from typing import Any

from judges.calibration_records import judge_trust
from judges.pairwise import Pair, PairwiseJudge
from monitor.store import Store
from retrain.gate.gate import Check
from retrain.gate.scores import OVERALL, ModelScores

EVEN = 0.5  # the win rate of a candidate no better and no worse than production


class CalibratedJudge:
    """A ``GateJudge``: consults the calibration record, then (if trusted) the pairwise judge."""

    def __init__(
        self,
        store: Store,
        judge: PairwiseJudge,
        judge_name: str,
        *,
        min_kappa: float,
        min_parsed: float,
        margin: float,
    ) -> None:
        self.store = store
        self.judge = judge
        self.judge_name = judge_name
        self.min_kappa = min_kappa
        self.min_parsed = min_parsed
        self.margin = margin

    def __call__(
        self, candidate: ModelScores, production: ModelScores
    ) -> tuple[Check | None, dict[str, Any]]:
        trust = judge_trust(
            self.store,
            self.judge_name,
            self.judge.endpoint.model,
            self.judge.rubric.version,
            min_kappa=self.min_kappa,
            min_parsed=self.min_parsed,
        )
        status: dict[str, Any] = {"used": trust.trusted, "status": trust.why}
        if not trust.trusted:
            return None, status
        answers = {e.id: e.output for e in production.examples}
        pairs = [Pair(e.prompt, e.output, answers[e.id]) for e in candidate.examples]
        result = self.judge.compare(pairs)
        status["pairwise"] = result.to_dict()
        rate = result.win_rate
        bar = EVEN - self.margin
        check = Check(
            "judge",
            OVERALL,
            "judge_win_rate",
            rate if rate is not None else 0.0,  # no usable verdict at all: the check fails
            "production",
            EVEN,
            bar,
            rate is not None and rate >= bar,
        )
        return check, status
