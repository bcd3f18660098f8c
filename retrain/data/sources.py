"""Where training examples come from: operator feedback first, then traffic the judges passed.

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
    feedback = store.query(
        f"SELECT id, prompt, answer {FEEDBACK_ROWS} ORDER BY received_at DESC LIMIT ?",
        [alias, limit],
    )
    judged = store.query(
        f"SELECT r.request_id, r.prompt_text, r.response_text {JUDGED_ROWS}"
        " ORDER BY r.started_at DESC LIMIT ?",
        [alias, judged_min_score, max(0, limit - len(feedback))],
    )
    return [
        {
            "messages": [
                {"role": "user", "content": prompt},
                {"role": "assistant", "content": answer},
            ],
            "source": source,
            "ref": ref,
        }
        for source, rows in (("feedback", feedback), ("judged", judged))
        for ref, prompt, answer in rows
    ]


def count_examples(store: Store, alias: str, judged_min_score: float) -> int:
    """How many examples a dataset for ``alias`` could start from (before filtering)."""
    [(count,)] = store.query(
        f"SELECT (SELECT count(*) {FEEDBACK_ROWS}) + (SELECT count(*) {JUDGED_ROWS})",
        [alias, alias, judged_min_score],
    )
    return int(count)
