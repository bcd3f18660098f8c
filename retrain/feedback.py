"""Every write to ``feedback``: operator corrections, the first source of training data."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from monitor.store import Store


def add_feedback(
    store: Store, alias: str, prompt: str, answer: str, *, request_id: str | None, actor: str
) -> str:
    """Store one correction (already redacted by the caller) and return its id."""
    feedback_id = uuid.uuid4().hex
    store.execute(
        "INSERT INTO feedback (id, received_at, model_alias, prompt, answer, request_id, actor)"
        " VALUES (?, ?, ?, ?, ?, ?, ?)",
        [feedback_id, datetime.now(UTC), alias, prompt, answer, request_id, actor],
    )
    return feedback_id
