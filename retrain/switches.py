"""Every write to ``loop_controls``: the operator's pause and pin switches per alias."""

from __future__ import annotations

from datetime import UTC, datetime

from monitor.store import Store


def is_paused(store: Store, alias: str) -> bool:
    rows = store.query("SELECT paused FROM loop_controls WHERE model_alias = ?", [alias])
    return bool(rows and rows[0][0])


def pinned_adapter(store: Store, alias: str) -> str | None:
    rows = store.query("SELECT pinned FROM loop_controls WHERE model_alias = ?", [alias])
    return rows[0][0] if rows else None


def set_paused(store: Store, alias: str, paused: bool) -> None:
    """Pause or resume automatic retraining of an alias."""
    _upsert_control(store, alias, "paused", paused)


def set_pinned(store: Store, alias: str, adapter_id: str | None) -> None:
    """Pin an alias to an adapter (automatic deploys stop) or unpin it with None."""
    _upsert_control(store, alias, "pinned", adapter_id)


def _upsert_control(store: Store, alias: str, column: str, value: object) -> None:
    now = datetime.now(UTC)
    store.execute(
        "INSERT OR IGNORE INTO loop_controls (model_alias, updated_at) VALUES (?, ?)", [alias, now]
    )
    # ``column`` is one of two literals above, never user input.
    store.execute(
        f"UPDATE loop_controls SET {column} = ?, updated_at = ? WHERE model_alias = ?",
        [value, now, alias],
    )
