"""Reference and current windows of captured traffic, per public model name (alias).

A reference row says where "normal" starts for an alias: after a deploy, a pinned time range,
or, before anything else happened, the first captured traffic. The reference window is the first
``reference_size`` exchanges from there (or the pinned range); the current window is the latest
``window_size`` exchanges after the reference window.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from monitor.store import Store

WINDOW_COLUMNS = (
    "request_id, started_at, prompt_text, response_text, finish_reason, prompt_tokens,"
    " completion_tokens, status_code, session_key"
)


@dataclass(frozen=True, slots=True)
class Reference:
    id: int
    model_alias: str
    starts_at: datetime
    ends_at: datetime | None
    reason: str


def active_reference(store: Store, alias: str) -> Reference | None:
    rows = store.query(
        "SELECT id, model_alias, starts_at, ends_at, reason FROM drift_references"
        " WHERE model_alias = ? AND active ORDER BY id DESC LIMIT 1",
        [alias],
    )
    return Reference(*rows[0]) if rows else None


def set_reference(
    store: Store, alias: str, starts_at: datetime, *, ends_at: datetime | None = None, reason: str
) -> Reference:
    """Make a new active reference for ``alias`` (the previous one is kept, inactive)."""
    if ends_at is not None and ends_at <= starts_at:
        raise ValueError(f"reference for {alias!r} ends ({ends_at}) before it starts ({starts_at})")
    store.query("UPDATE drift_references SET active = false WHERE model_alias = ?", [alias])
    [row] = store.query(
        "INSERT INTO drift_references (model_alias, starts_at, ends_at, reason)"
        " VALUES (?, ?, ?, ?) RETURNING id, model_alias, starts_at, ends_at, reason",
        [alias, starts_at, ends_at, reason],
    )
    return Reference(*row)


# The initial reference holds the alias's traffic from its very first request. Rows are written
# when their answers end, so a request that started first may land after the reference was made:
# starting it at the first row then written would push such rows out of the reference and shift
# the window boundary into later traffic.
INITIAL_START = datetime(1970, 1, 1, tzinfo=UTC)


def ensure_reference(store: Store, alias: str) -> Reference | None:
    """The active reference, or an ``initial`` one from the alias's first capture (None if none)."""
    reference = active_reference(store, alias)
    if reference is not None:
        return reference
    first = store.query("SELECT count(*) FROM requests WHERE model_alias = ?", [alias])
    if not first or not first[0][0]:
        return None
    return set_reference(store, alias, INITIAL_START, reason="initial")


def aliases_with_traffic(store: Store) -> list[str]:
    rows = store.query(
        "SELECT DISTINCT model_alias FROM requests WHERE model_alias IS NOT NULL ORDER BY 1"
    )
    return [row[0] for row in rows]


def windows(
    store: Store, reference: Reference, *, reference_size: int, window_size: int
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(reference rows, current rows) of successful exchanges, oldest first."""
    ref_rows = store.records(
        f"SELECT {WINDOW_COLUMNS} FROM requests"
        " WHERE model_alias = ? AND status_code = 200 AND started_at >= ?"
        " AND (CAST(? AS TIMESTAMPTZ) IS NULL OR started_at < ?)"
        " ORDER BY started_at LIMIT ?",
        [
            reference.model_alias,
            reference.starts_at,
            reference.ends_at,
            reference.ends_at,
            reference_size,
        ],
    )
    if not ref_rows:
        return [], []
    after = reference.ends_at or ref_rows[-1]["started_at"]
    cur_rows = store.records(
        f"SELECT * FROM (SELECT {WINDOW_COLUMNS} FROM requests"
        " WHERE model_alias = ? AND status_code = 200 AND started_at > ?"
        " ORDER BY started_at DESC LIMIT ?) ORDER BY started_at",
        [reference.model_alias, after, window_size],
    )
    return ref_rows, cur_rows
