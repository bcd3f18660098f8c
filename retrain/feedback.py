"""Every write to ``feedback``: operator corrections and preference pairs, the first source of
training data (a pair is a correction plus the answer it replaces)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from monitor.store import Store


def add_feedback(
    store: Store,
    alias: str,
    prompt: str,
    answer: str,
    *,
    request_id: str | None,
    actor: str,
    rejected: str | None = None,
) -> str:
    """Store one correction or pair (already redacted by the caller) and return its id.

    ``answer`` is the wanted answer; ``rejected`` the unwanted one, if the caller has it (with
    only a ``request_id``, the dataset takes that exchange's captured answer as rejected).
    """
    if rejected is not None and rejected.strip() == answer.strip():
        raise ValueError("the rejected answer is the same as the chosen one")
    feedback_id = uuid.uuid4().hex
    store.execute(
        "INSERT INTO feedback"
        " (id, received_at, model_alias, prompt, answer, rejected, request_id, actor)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        [feedback_id, datetime.now(UTC), alias, prompt, answer, rejected, request_id, actor],
    )
    return feedback_id
