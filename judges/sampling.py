"""Which captured exchanges get judged: a deterministic share per model alias, newest first.

A request is in the sample when ``md5(request_id)`` falls below its alias's rate, so the decision
is stable across passes and restarts, every judge sees the same sample, and each alias is sampled
at its own rate with its own cap per pass (stratified: a loud alias cannot starve a quiet one).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from monitor.store import Store

BUCKETS = (
    1_000_000  # written out in the SQL below: a bound parameter would make the modulo a DOUBLE
)


@dataclass(frozen=True, slots=True)
class Exchange:
    request_id: str
    model_alias: str
    prompt: str
    response: str


def cutoff(rate: float) -> int:
    if not 0.0 <= rate <= 1.0:
        raise ValueError(f"sample rate {rate} must be within [0, 1]")
    return round(rate * BUCKETS)


def in_sample(request_id: str, rate: float) -> bool:
    """The same decision the SQL below makes, for one id (DuckDB's md5_number is little-endian)."""
    digest = hashlib.md5(request_id.encode()).digest()
    return int.from_bytes(digest, "little") % BUCKETS < cutoff(rate)


def sample_unjudged(
    store: Store,
    judge: str,
    aliases: Iterable[str],
    rates: Mapping[str, float],
    default_rate: float,
    per_alias: int,
) -> list[Exchange]:
    """Sampled, successful exchanges of the given aliases that ``judge`` has not judged yet."""
    names = sorted(set(aliases))
    if not names or per_alias <= 0:
        return []
    cutoffs = [cutoff(rates.get(name, default_rate)) for name in names]
    rows = store.query(
        """
        WITH rates AS (
            SELECT unnest(?::VARCHAR[]) AS alias, unnest(?::BIGINT[]) AS cutoff
        ), candidates AS (
            SELECT r.request_id, r.model_alias, r.prompt_text, r.response_text,
                   row_number() OVER (PARTITION BY r.model_alias
                                      ORDER BY r.started_at DESC, r.request_id) AS rank
            FROM requests r JOIN rates ON r.model_alias = rates.alias
            WHERE r.status_code = 200
              AND r.prompt_text IS NOT NULL AND r.response_text IS NOT NULL
              AND md5_number(r.request_id) % 1000000 < rates.cutoff  -- BUCKETS
              AND NOT EXISTS (
                  SELECT 1 FROM judgments j WHERE j.request_id = r.request_id AND j.judge = ?
              )
        )
        SELECT request_id, model_alias, prompt_text, response_text FROM candidates
        WHERE rank <= ? ORDER BY model_alias, rank
        """,
        [names, cutoffs, judge, per_alias],
    )
    return [Exchange(*row) for row in rows]
