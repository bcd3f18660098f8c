"""The ``judgments`` table: content-hash cache lookups, batched appends, window score means."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

import pyarrow as pa

from judges.metrics import Outcome
from judges.verdict import Verdict
from monitor.store import Store

# Outcomes worth reusing for an identical pair: errors and budget stops are not verdicts.
CACHEABLE = (Outcome.SCORED.value, Outcome.UNPARSEABLE.value)

SCHEMA = pa.schema(
    [
        ("request_id", pa.string()),
        ("source", pa.string()),
        ("model_alias", pa.string()),
        ("judge", pa.string()),
        ("judge_model", pa.string()),
        ("rubric_version", pa.string()),
        ("content_hash", pa.string()),
        ("outcome", pa.string()),
        ("cached", pa.bool_()),
        ("score", pa.float64()),
        ("reason", pa.string()),
        ("raw_verdict", pa.string()),
        ("prompt_tokens", pa.int32()),
        ("completion_tokens", pa.int32()),
        ("attempts", pa.int32()),
        ("latency_s", pa.float64()),
        ("created_at", pa.timestamp("us", tz="UTC")),
    ]
)


@dataclass(frozen=True, slots=True)
class Judgment:
    request_id: str
    source: str  # traffic | anchor
    model_alias: str | None
    judge: str
    rubric_version: str
    content_hash: str
    verdict: Verdict
    created_at: datetime
    cached: bool = False


def content_hash(
    prompt: str, response: str, judge: str, version: str, judge_model: str | None
) -> str:
    """Identity of one evaluation: the same pair, judge, rubric version and model is judged once."""
    blob = json.dumps([judge, version, judge_model, prompt, response], ensure_ascii=False)
    return hashlib.sha256(blob.encode()).hexdigest()


def cached_verdicts(store: Store, hashes: Iterable[str]) -> dict[str, Verdict]:
    """Earlier verdicts (scored or unparseable) for any of these content hashes."""
    wanted = sorted(set(hashes))
    if not wanted:
        return {}
    rows = store.query(
        "SELECT content_hash, outcome, score, reason, raw_verdict, judge_model FROM ("
        "  SELECT *, row_number() OVER (PARTITION BY content_hash ORDER BY id) AS n"
        "  FROM judgments WHERE content_hash IN (SELECT unnest(?::VARCHAR[]))"
        "  AND outcome IN (SELECT unnest(?::VARCHAR[])) AND NOT cached"
        ") WHERE n = 1",
        [wanted, list(CACHEABLE)],
    )
    return {
        h: Verdict(Outcome(outcome), score, reason or "", raw, judge_model=model)
        for h, outcome, score, reason, raw, model in rows
    }


def append_judgments(store: Store, judgments: Sequence[Judgment]) -> int:
    """Write judgments in one Arrow append."""
    if not judgments:
        return 0
    columns: dict[str, list[object]] = {name: [] for name in SCHEMA.names}
    for j in judgments:
        v = j.verdict
        values = {
            "request_id": j.request_id,
            "source": j.source,
            "model_alias": j.model_alias,
            "judge": j.judge,
            "judge_model": v.judge_model,
            "rubric_version": j.rubric_version,
            "content_hash": j.content_hash,
            "outcome": v.outcome.value,
            "cached": j.cached,
            "score": v.score,
            "reason": v.reason,
            "raw_verdict": v.raw,
            "prompt_tokens": 0 if j.cached else v.prompt_tokens,
            "completion_tokens": 0 if j.cached else v.completion_tokens,
            "attempts": 0 if j.cached else v.attempts,
            "latency_s": 0.0 if j.cached else v.latency_s,
            "created_at": j.created_at,
        }
        for name, value in values.items():
            columns[name].append(value)
    return store.append("judgments", pa.table(columns, schema=SCHEMA))


def window_means(
    store: Store, judge: str, aliases: Iterable[str], window: int
) -> dict[str, tuple[float, int]]:
    """Per alias: mean score and count over the latest ``window`` scored traffic judgments."""
    names = sorted(set(aliases))
    if not names:
        return {}
    rows = store.query(
        "SELECT model_alias, avg(score), count(*) FROM ("
        "  SELECT model_alias, score, row_number() OVER ("
        "    PARTITION BY model_alias ORDER BY created_at DESC, id DESC) AS n"
        "  FROM judgments WHERE judge = ? AND source = 'traffic' AND outcome = 'scored'"
        "  AND model_alias IN (SELECT unnest(?::VARCHAR[]))"
        ") WHERE n <= ? GROUP BY model_alias",
        [judge, names, window],
    )
    return {alias: (float(mean), int(count)) for alias, mean, count in rows}


JUDGMENT_COLUMNS = (
    "id, request_id, source, model_alias, judge, judge_model, rubric_version, outcome, cached,"
    " score, reason, prompt_tokens, completion_tokens, attempts, latency_s, created_at"
)


def recent_judgments(
    store: Store, *, limit: int, model: str | None = None, judge: str | None = None
) -> list[dict[str, object]]:
    """Newest judgments first, optionally of one model alias and/or one judge (for the API)."""
    where, params = [], []
    if model is not None:
        where.append("model_alias = ?")
        params.append(model)
    if judge is not None:
        where.append("judge = ?")
        params.append(judge)
    clause = f"WHERE {' AND '.join(where)}" if where else ""
    rows = store.records(
        f"SELECT {JUDGMENT_COLUMNS} FROM judgments {clause} ORDER BY id DESC LIMIT ?",
        [*params, limit],
    )
    for row in rows:
        row["created_at"] = row["created_at"].isoformat()
    return rows
