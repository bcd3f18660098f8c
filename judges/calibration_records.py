"""Calibrations on record: what ``judges calibrate`` measured, so the gate can trust a judge.

A calibration counts for a judge only with the same judge name, judge model and rubric version:
a new rubric or model needs its own. Writes only ``judge_calibrations``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from judges.calibration import CalibrationReport
from monitor.store import Store


def record_calibration(
    store: Store,
    report: CalibrationReport,
    labelled_set: str,
    clock: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> None:
    a = report.agreement
    store.execute(
        "INSERT INTO judge_calibrations (created_at, judge, judge_model, rubric_version,"
        " labelled_set, n_items, parsed, exact, kappa, min_kappa, min_parsed, flagged)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [
            clock(),
            report.judge,
            report.judge_model,
            report.rubric_version,
            labelled_set,
            a.n,
            a.parsed,
            a.exact,
            a.kappa,
            report.min_kappa,
            report.min_parsed,
            report.flagged,
        ],
    )


@dataclass(frozen=True)
class Trust:
    """Whether a judge may count in a decision, and why (or why not)."""

    trusted: bool
    why: str
    calibration: dict[str, Any] | None = None


def judge_trust(
    store: Store,
    judge: str,
    judge_model: str,
    rubric_version: str,
    *,
    min_kappa: float,
    min_parsed: float,
) -> Trust:
    """Trusted when the newest calibration of exactly this judge meets both bars today."""
    rows = store.records(
        "SELECT created_at, labelled_set, n_items, parsed, kappa FROM judge_calibrations"
        " WHERE judge = ? AND judge_model IS NOT DISTINCT FROM ? AND rubric_version = ?"
        " ORDER BY created_at DESC, id DESC LIMIT 1",
        [judge, judge_model, rubric_version],
    )
    who = f"{judge} ({judge_model}, rubric {rubric_version})"
    if not rows:
        return Trust(False, f"not used: {who} has no calibration on record (judges calibrate)")
    c = rows[0]
    kappa = c["kappa"]
    when = f"calibrated {c['created_at']:%Y-%m-%d %H:%M} on {c['n_items']} items"
    measured = f"kappa {'undefined' if kappa is None else f'{kappa:.3f}'}, parsed {c['parsed']:.2f}"
    if kappa is None or kappa < min_kappa or c["parsed"] < min_parsed:
        return Trust(
            False,
            f"not used: {who} {measured}, below the bar (kappa >= {min_kappa},"
            f" parsed >= {min_parsed}; {when})",
            c,
        )
    return Trust(True, f"used: {who} {measured} ({when})", c)


def recorded_calibrations(store: Store, limit: int) -> list[dict[str, Any]]:
    """Calibrations on record, newest first."""
    return store.records(
        "SELECT id, created_at, judge, judge_model, rubric_version, labelled_set, n_items,"
        " parsed, exact, kappa, min_kappa, min_parsed, flagged FROM judge_calibrations"
        " ORDER BY created_at DESC, id DESC LIMIT ?",
        [limit],
    )
