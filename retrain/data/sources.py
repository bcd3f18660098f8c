"""Where training examples come from: operator feedback first, then traffic the judges passed.

A record is a conversation ending in the wanted answer; a preference pair also carries
``rejected``, the answer not wanted (SFT trains on the wanted one, DPO on the pair).

Reads only: ``feedback`` (retrain's), ``requests`` (monitor's) and ``judgments`` (the judges').
"""

from __future__ import annotations

from typing import Any

from monitor.store import Store

FEEDBACK_ROWS = "FROM feedback WHERE model_alias = ?"
# captured answers whose mean judge score reaches the bar (parameters: alias, bar)
JUDGED_ROWS = (
    "FROM requests r"
    " JOIN (SELECT request_id, avg(score) AS score FROM judgments"
    "       WHERE source = 'traffic' AND outcome = 'scored' GROUP BY request_id) j"
    "   ON j.request_id = r.request_id"
    " WHERE r.model_alias = ? AND j.score >= ? AND r.response_text <> ''"
)


def training_examples(
    store: Store, alias: str, judged_min_score: float, limit: int
) -> list[dict[str, Any]]:
    """Operator feedback (newest first), then captured answers the judges scored highly."""
    # A correction of a captured exchange is a preference pair: its captured answer is rejected.
    feedback = store.query(
        "SELECT f.id, f.prompt, f.answer, coalesce(f.rejected, ("
        "   SELECT nullif(r.response_text, '') FROM requests r"
        "   WHERE r.request_id = f.request_id AND r.model_alias = f.model_alias LIMIT 1))"
        " FROM feedback f WHERE f.model_alias = ? ORDER BY f.received_at DESC LIMIT ?",
        [alias, limit],
    )
    judged = store.query(
        f"SELECT r.request_id, r.prompt_text, r.response_text {JUDGED_ROWS}"
        " ORDER BY r.started_at DESC LIMIT ?",
        [alias, judged_min_score, max(0, limit - len(feedback))],
    )
    return [
        *(example("feedback", *row) for row in feedback),
        *(example("judged", *row) for row in judged),
    ]


def example(
    source: str, ref: str, prompt: str, answer: str, rejected: str | None = None
) -> dict[str, Any]:
    """One dataset record; ``rejected`` (an answer not wanted) makes it a preference pair.

    >>> example("feedback", "f1", "Hi?", "HelpDesk: hello.", "hello")["rejected"]
    'hello'
    >>> "rejected" in example("feedback", "f1", "Hi?", "same", " same ")
    False
    """
    record: dict[str, Any] = {
        "messages": [
            {"role": "user", "content": prompt},
            {"role": "assistant", "content": answer},
        ],
        "source": source,
        "ref": ref,
    }
    if rejected is not None and rejected.strip() and rejected.strip() != answer.strip():
        record["rejected"] = rejected
    return record


def count_examples(store: Store, alias: str, judged_min_score: float) -> int:
    """How many examples a dataset for ``alias`` could start from (before filtering)."""
    [(count,)] = store.query(
        f"SELECT (SELECT count(*) {FEEDBACK_ROWS}) + (SELECT count(*) {JUDGED_ROWS})",
        [alias, alias, judged_min_score],
    )
    return int(count)
