"""Every write to ``evaluations``: one row per gate decision, linked to its adapter and report."""

from __future__ import annotations

import json
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any

from monitor.store import Store


def record_evaluation(
    store: Store,
    adapter_id: str,
    *,
    golden_set: str,
    passed: bool,
    summary: dict[str, Any],
    report_path: Path | None,
    created_at: datetime,
) -> None:
    store.execute(
        "INSERT INTO evaluations (id, adapter_id, created_at, golden_set, passed, summary,"
        " report_path) VALUES (?, ?, ?, ?, ?, ?, ?)",
        [
            uuid.uuid4().hex[:16],
            adapter_id,
            created_at,
            golden_set,
            passed,
            json.dumps(summary),
            str(report_path) if report_path else None,
        ],
    )


def evaluations(store: Store, adapter_id: str | None) -> list[dict[str, Any]]:
    """Gate decisions, newest first; ``adapter_id`` None: every adapter's."""
    return store.records(
        "SELECT id, adapter_id, created_at, golden_set, passed, summary, report_path"
        " FROM evaluations WHERE (? IS NULL OR adapter_id = ?) ORDER BY created_at DESC",
        [adapter_id, adapter_id],
    )
