"""Canary releases: a new version takes a share of its alias's traffic until live data decides.

``start`` loads the candidate wherever the alias is served (every replica in a fleet) and routes
``share`` of the alias's conversations to it (the split is the sidecars', by a stable hash of the
session, ``monitor.aliases.Canary``). Captured rows carry the served version, so ``compare``
looks at both sides of the same live window: the share of failed requests, of refusals, of empty
and of truncated answers, the latency, and the LLM judges' scores where a judge runs. Each check
is the drift engine's calibrated permutation test (``monitor.drift.calibration``), moving whole
sessions, at ``alpha`` split over the checks (Bonferroni).

``check`` (the loop's tick) rolls the candidate back as soon as one check shows it significantly
worse, and promotes it once both sides have ``min_requests`` and none does; a canary that never
gets enough traffic within ``max_duration_s`` is rolled back (nothing promotes on too little
evidence). Every decision is a ``canaries`` row with the numbers behind it and a metric;
operators can promote or abort through the API at any time.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np

from judges.rules import REFUSAL  # the refusal judge's pattern: both count the same answers
from monitor.aliases import Canary
from monitor.drift.calibration import calibrate_histogram
from monitor.drift.sessions import session_codes, session_counts
from monitor.drift.statistics import value_histograms
from monitor.store import Store
from retrain.adapter_registry import Adapter, AdapterRegistryError, Status
from retrain.metrics import LoopMetrics
from retrain.serving.deploy import AliasSwitch, Deployer

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CanarySettings:
    share: float = 0.0  # 0: no canary, a version that passes the gate takes all traffic at once
    min_requests: int = 100  # on each side before a promotion
    alpha: float = 0.01  # for all checks together
    max_duration_s: float = 86400.0
    draws: int = 10000  # permutation draws per check: small p-values at small samples

    @property
    def enabled(self) -> bool:
        return self.share > 0


@dataclass(frozen=True)
class Check:
    name: str
    candidate: float
    production: float
    n_candidate: int
    n_production: int
    p_value: float
    regression: bool

    def as_dict(self) -> dict[str, Any]:
        return {
            **self.__dict__,
            "candidate": round(self.candidate, 4),
            "production": round(self.production, 4),
        }


@dataclass(frozen=True)
class Comparison:
    candidate: str
    production: str
    n_candidate: int
    n_production: int
    checks: list[Check]
    alpha_each: float

    @property
    def regressions(self) -> list[Check]:
        return [c for c in self.checks if c.regression]

    def as_dict(self) -> dict[str, Any]:
        return {
            "candidate": self.candidate,
            "production": self.production,
            "n_candidate": self.n_candidate,
            "n_production": self.n_production,
            "alpha_each": self.alpha_each,
            "checks": [c.as_dict() for c in self.checks],
        }

    def summary(self) -> str:
        return "; ".join(
            f"{c.name} {c.candidate:.3g} vs {c.production:.3g} (p={c.p_value:.2g})"
            for c in (self.regressions or self.checks)
        )


@dataclass(frozen=True)
class RunningCanary:
    id: int
    alias: str
    adapter_id: str
    served_name: str
    share: float
    started_at: datetime


class CanaryRelease:
    def __init__(
        self,
        deployer: Deployer,
        switch: AliasSwitch,
        metrics: LoopMetrics,
        settings: CanarySettings,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.deployer = deployer
        self.store: Store = deployer.store
        self.switch = switch
        self.metrics = metrics
        self.settings = settings
        self.clock = clock

    def start(self, adapter: Adapter, *, actor: str, reason: str) -> RunningCanary:
        """Serve ``adapter`` to ``settings.share`` of its alias's conversations."""
        alias = adapter.model_alias
        if self.running(alias) is not None:
            raise AdapterRegistryError(f"{alias} already runs a canary: promote or abort it")
        if adapter.status is not Status.STAGING:
            raise AdapterRegistryError(f"{adapter.served_name} is {adapter.status}, not staging")
        self.deployer.admin.load(adapter.served_name, adapter.path)  # every replica, first
        share, started_at = self.settings.share, self.clock()
        [(row_id,)] = self.store.execute(
            "INSERT INTO canaries (model_alias, adapter_id, served_name, production, share,"
            " started_at, state, actor, reason) VALUES (?, ?, ?, ?, ?, ?, 'running', ?, ?)"
            " RETURNING id",
            [
                alias,
                adapter.id,
                adapter.served_name,
                self.deployer.current(alias).served_name,
                share,
                started_at,
                actor,
                reason,
            ],
        )
        self.switch.set_canary(alias, Canary(adapter.served_name, share))
        self.metrics.canary_share.labels(model=alias).set(share)
        log.info("%s: canary %s at %.0f%%", alias, adapter.served_name, 100 * share)
        return RunningCanary(row_id, alias, adapter.id, adapter.served_name, share, started_at)

    def running(self, alias: str) -> RunningCanary | None:
        rows = self.store.query(
            "SELECT id, model_alias, adapter_id, served_name, share, started_at FROM canaries"
            " WHERE model_alias = ? AND state = 'running' ORDER BY id DESC LIMIT 1",
            [alias],
        )
        return RunningCanary(*rows[0]) if rows else None

    def history(self, alias: str | None = None, limit: int = 20) -> list[dict[str, Any]]:
        rows = self.store.records(
            "SELECT id, model_alias, adapter_id, served_name, production, share, started_at,"
            " state, decided_at, actor, reason, numbers FROM canaries"
            " WHERE ? IS NULL OR model_alias = ? ORDER BY id DESC LIMIT ?",
            [alias, alias, limit],
        )
        for row in rows:
            row["numbers"] = json.loads(row["numbers"]) if row["numbers"] else None
        return rows

    def restore(self, alias: str) -> None:
        """After a restart: route the running canary again (the alias table starts without it)."""
        canary = self.running(alias)
        if canary is not None:
            adapter = self.deployer.adapters.get(canary.adapter_id)
            self.deployer.admin.keep(adapter.served_name, adapter.path)
            self.switch.set_canary(alias, Canary(canary.served_name, canary.share))
            self.metrics.canary_share.labels(model=alias).set(canary.share)

    def compare(self, alias: str) -> Comparison | None:
        canary = self.running(alias)
        return None if canary is None else self._compare(canary)

    def _compare(self, canary: RunningCanary) -> Comparison:
        production = self.deployer.current(canary.alias).served_name
        return compare(self.store, canary.alias, canary.served_name, production,
                       canary.started_at, self.settings)  # fmt: skip

    def check(self, alias: str) -> str | None:
        """The scheduled decision: ``promoted``, ``rolled_back``, ``watching`` (no decision
        yet), or None when the alias runs no canary."""
        canary = self.running(alias)
        if canary is None:
            return None
        comparison = self._compare(canary)
        if comparison.regressions:
            self.abort(alias, actor="loop", reason=f"canary regressed: {comparison.summary()}",
                       comparison=comparison, decision="rolled_back")  # fmt: skip
            return "rolled_back"
        enough = min(comparison.n_candidate, comparison.n_production)
        if enough >= self.settings.min_requests:
            self.promote(alias, actor="loop", reason=f"canary held: {comparison.summary()}",
                         comparison=comparison)  # fmt: skip
            return "promoted"
        if self.clock() - canary.started_at > timedelta(seconds=self.settings.max_duration_s):
            why = (
                f"only {enough} requests on the smaller side after"
                f" {self.settings.max_duration_s:g} s (needs {self.settings.min_requests})"
            )
            self.abort(alias, actor="loop", reason=f"canary expired: {why}",
                       comparison=comparison, decision="rolled_back")  # fmt: skip
            return "rolled_back"
        return "watching"

    def promote(
        self, alias: str, *, actor: str, reason: str, comparison: Comparison | None = None
    ) -> Adapter:
        """The candidate takes all of the alias's traffic."""
        canary = self._running(alias)
        comparison = comparison or self._compare(canary)
        adapter = self.deployer.adapters.get(canary.adapter_id)
        route = self.deployer.deploy(adapter, actor=actor, reason=reason, action="promote")
        self.switch.set_canary(alias, None)
        self._decide(canary, "promoted", actor, reason, comparison)
        assert route.adapter is not None
        return route.adapter

    def abort(
        self,
        alias: str,
        *,
        actor: str,
        reason: str,
        comparison: Comparison | None = None,
        decision: str = "aborted",
    ) -> Adapter:
        """Production takes all traffic again; the candidate is rejected and unloaded."""
        canary = self._running(alias)
        comparison = comparison or self._compare(canary)
        self.switch.set_canary(alias, None)
        adapter = self.deployer.adapters.transition(
            canary.adapter_id, Status.REJECTED, actor=actor, reason=f"canary: {reason}"
        )
        self._decide(canary, decision, actor, reason, comparison)
        self.deployer.unload(canary.served_name)
        if decision == "rolled_back":
            kind = "automatic" if actor == "loop" else "manual"
            self.metrics.rollbacks.labels(model=alias, reason=kind).inc()
        return adapter

    def _running(self, alias: str) -> RunningCanary:
        canary = self.running(alias)
        if canary is None:
            raise AdapterRegistryError(f"{alias} runs no canary")
        return canary

    def _decide(
        self,
        canary: RunningCanary,
        decision: str,
        actor: str,
        reason: str,
        comparison: Comparison | None,
    ) -> None:
        self.store.execute(
            "UPDATE canaries SET state = ?, decided_at = ?, actor = ?, reason = ?, numbers = ?"
            " WHERE id = ?",
            [
                decision,
                self.clock(),
                actor,
                reason[:2000],
                json.dumps(comparison.as_dict()) if comparison else None,
                canary.id,
            ],
        )
        self.metrics.canary_decisions.labels(model=canary.alias, decision=decision).inc()
        self.metrics.canary_share.labels(model=canary.alias).set(0)
        log.warning("%s: canary %s %s: %s", canary.alias, canary.served_name, decision, reason)


def compare(
    store: Store,
    alias: str,
    candidate: str,
    production: str,
    since: datetime,
    settings: CanarySettings,
) -> Comparison:
    """Candidate against production on the rows both served since the canary started."""
    rows = store.query(
        "SELECT served_model = ?, coalesce(session_key, request_id), status_code >= 500"
        " OR error IS NOT NULL, coalesce(response_text, ''), finish_reason = 'length',"
        " latency_s FROM requests WHERE model_alias = ? AND started_at >= ?"
        " AND served_model IN (?, ?)",
        [candidate, alias, since, candidate, production],
    )
    sides = {True: [r for r in rows if r[0]], False: [r for r in rows if not r[0]]}
    judged = store.query(
        "SELECT r.served_model = ?, coalesce(r.session_key, r.request_id), j.score"
        " FROM judgments j JOIN requests r ON r.request_id = j.request_id"
        " WHERE r.model_alias = ? AND r.started_at >= ? AND r.served_model IN (?, ?)"
        " AND j.outcome = 'scored' AND j.judge_model IS NOT NULL",
        [candidate, alias, since, candidate, production],
    )
    ok = {side: [r for r in part if not r[2]] for side, part in sides.items()}  # answered ones
    flags: list[tuple[str, dict[bool, list[tuple[Any, ...]]], Callable[[tuple[Any, ...]], bool]]]
    flags = [
        ("error_rate", sides, lambda r: bool(r[2])),
        ("refusal_rate", ok, lambda r: REFUSAL.search(r[3]) is not None),
        ("empty_rate", ok, lambda r: not r[3].strip()),
        ("truncation_rate", ok, lambda r: bool(r[4])),
    ]
    Centre = Callable[[np.ndarray[Any, Any]], Any]
    numeric: list[tuple[str, list[tuple[Any, ...]], int, bool, Centre]] = [
        # name, rows, value column, worse when higher, the centre compared; judge scores are
        # few steps: their mean moves where the median may not
        ("latency_s", [r for r in rows if r[5] is not None and not r[2]], 5, True, np.median),
        ("judge_score", judged, 2, False, np.mean),
    ]
    present = [n for n in numeric if {bool(r[0]) for r in n[1]} == {True, False}]
    alpha_each = settings.alpha / (len(flags) + len(present))
    checks = [_rate_check(name, part, flag, alpha_each, settings.draws)
              for name, part, flag in flags]  # fmt: skip
    for name, part, column, higher_is_worse, centre in present:
        checks.append(
            _value_check(name, part, column, higher_is_worse, centre, alpha_each, settings)
        )
    return Comparison(
        candidate, production, len(sides[True]), len(sides[False]),
        [c for c in checks if c is not None], alpha_each,
    )  # fmt: skip


def _rate_check(
    name: str,
    sides: dict[bool, list[tuple[Any, ...]]],
    flag: Callable[[tuple[Any, ...]], bool],
    alpha_each: float,
    draws: int,
) -> Check | None:
    prod, cand = sides[False], sides[True]
    if not prod or not cand:
        return None
    prod_bins = np.array([flag(r) for r in prod], dtype=np.intp)
    cand_bins = np.array([flag(r) for r in cand], dtype=np.intp)
    rate_p, rate_c = float(prod_bins.mean()), float(cand_bins.mean())
    if prod_bins.sum() + cand_bins.sum() == 0:
        return Check(name, 0.0, 0.0, len(cand), len(prod), 1.0, False)
    p = _p_value("rate_difference", prod_bins, cand_bins, 2, prod, cand, draws)
    return Check(name, rate_c, rate_p, len(cand), len(prod), p, rate_c > rate_p and p < alpha_each)


def _value_check(
    name: str,
    rows: list[tuple[Any, ...]],
    column: int,
    higher_is_worse: bool,
    centre: Callable[[np.ndarray[Any, Any]], Any],
    alpha_each: float,
    settings: CanarySettings,
) -> Check:
    prod = [r for r in rows if not r[0]]
    cand = [r for r in rows if r[0]]
    # Hundredths (10 ms of latency, score steps) are fine enough and keep the permutation's urns few.
    prod_v = np.round(np.array([float(r[column]) for r in prod]), 2)
    cand_v = np.round(np.array([float(r[column]) for r in cand]), 2)
    values, _, _ = value_histograms(prod_v, cand_v)
    prod_bins, cand_bins = np.searchsorted(values, prod_v), np.searchsorted(values, cand_v)
    p = _p_value("ks", prod_bins, cand_bins, len(values), prod, cand, settings.draws)
    centre_c, centre_p = float(centre(cand_v)), float(centre(prod_v))
    worse = centre_c > centre_p if higher_is_worse else centre_c < centre_p
    return Check(name, centre_c, centre_p, len(cand), len(prod), p, worse and p < alpha_each)


def _p_value(
    statistic: str,
    prod_bins: np.ndarray[Any, Any],
    cand_bins: np.ndarray[Any, Any],
    k: int,
    prod: list[tuple[Any, ...]],
    cand: list[tuple[Any, ...]],
    draws: int,
) -> float:
    """The calibrated p-value, permuting whole sessions between the two sides."""
    codes = session_codes([r[1] for r in prod] + [r[1] for r in cand])
    sessions = session_counts(
        prod_bins, cand_bins, _dense(codes[: len(prod)]), _dense(codes[len(prod) :]), k
    )
    result = calibrate_histogram(
        statistic,
        np.bincount(prod_bins, minlength=k),
        np.bincount(cand_bins, minlength=k),
        draws=draws,
        sessions=sessions,
    )
    return float(result.p_value)


def _dense(codes: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    return np.unique(codes, return_inverse=True)[1] if len(codes) else codes
