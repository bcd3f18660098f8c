"""Monitor's tables as numbered migrations (requests, embeddings, drift), and the Migration type.

Each package owns its tables: ``judges.schema``, ``retrain.schema`` and ``driftloop.api.schema``
hold theirs, and ``driftloop.schema`` composes them all for the service. Monitor imports none of
them; a ``Store`` opened with only these migrations (the default) is a capture-only database.
"""

from __future__ import annotations

from typing import NamedTuple


class Migration(NamedTuple):
    version: int
    name: str
    sql: str


# Versions are global across packages (one ``schema_migrations`` sequence per file), so existing
# files keep migrating: take the next free number, never reuse one, never edit one that shipped.
MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        1,
        "requests",
        """
        CREATE TABLE requests (
            request_id        VARCHAR NOT NULL,   -- driftloop's id for this exchange (uuid4 hex)
            started_at        TIMESTAMPTZ NOT NULL,
            route             VARCHAR NOT NULL,   -- chat_completions | completions
            model_alias       VARCHAR,            -- `model` as the client sent it
            served_model      VARCHAR,            -- `model` as sent to vLLM (after the alias table)
            stream            BOOLEAN NOT NULL,
            request_json      VARCHAR,            -- the client's request body (redacted)
            prompt_text       VARCHAR,            -- messages flattened to text, or the prompt
            response_text     VARCHAR,            -- assembled completion text (first choice)
            finish_reason     VARCHAR,
            prompt_tokens     INTEGER,
            completion_tokens INTEGER,
            status_code       INTEGER NOT NULL,
            latency_s         DOUBLE,             -- request received -> last byte sent
            ttft_s            DOUBLE,             -- request received -> first body byte from upstream
            upstream_id       VARCHAR,            -- the id field of the upstream response
            error             VARCHAR             -- why the exchange did not complete, if it did not
        );
        """,
    ),
    Migration(
        3,
        "embeddings_and_drift",
        """
        CREATE TABLE embeddings (
            request_id  VARCHAR NOT NULL,
            field       VARCHAR NOT NULL,     -- prompt | response
            model       VARCHAR NOT NULL,     -- embedding model name
            vector      FLOAT[] NOT NULL,     -- normalised
            created_at  TIMESTAMPTZ NOT NULL DEFAULT now()
        );
        CREATE SEQUENCE drift_references_seq;
        CREATE TABLE drift_references (      -- `references` is an SQL keyword
            id          BIGINT PRIMARY KEY DEFAULT nextval('drift_references_seq'),
            model_alias VARCHAR NOT NULL,
            starts_at   TIMESTAMPTZ NOT NULL,
            ends_at     TIMESTAMPTZ,          -- NULL: open-ended (grows until re-baselined)
            reason      VARCHAR NOT NULL,     -- deploy | pinned | initial
            created_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
            active      BOOLEAN NOT NULL DEFAULT true
        );
        CREATE SEQUENCE drift_runs_seq;
        CREATE TABLE drift_runs (
            id            BIGINT PRIMARY KEY DEFAULT nextval('drift_runs_seq'),
            run_at        TIMESTAMPTZ NOT NULL,
            model_alias   VARCHAR NOT NULL,
            signal        VARCHAR NOT NULL,
            score         DOUBLE,
            threshold     DOUBLE,
            p_value       DOUBLE,
            n_reference   INTEGER NOT NULL,
            n_current     INTEGER NOT NULL,
            drifted       BOOLEAN NOT NULL,
            reason        VARCHAR NOT NULL,   -- why it did or did not trip
            reference_id  BIGINT,
            details       VARCHAR             -- JSON: per-cluster contributions, examples
        );
        """,
    ),
    Migration(
        6,
        "drift_sessions",
        """
        -- Conversations: rows of one session are correlated, so drift permutes whole sessions.
        ALTER TABLE requests ADD COLUMN session_key VARCHAR;  -- see monitor.capture.session_key
        -- Effective sizes (sessions weighted by their design effect) beside n_reference/n_current.
        ALTER TABLE drift_runs ADD COLUMN n_effective_reference DOUBLE;
        ALTER TABLE drift_runs ADD COLUMN n_effective_current DOUBLE;
        ALTER TABLE drift_runs ADD COLUMN effect DOUBLE;             -- noise-corrected effect size
        ALTER TABLE drift_runs ADD COLUMN p_method VARCHAR;          -- permutation | tail | ...
        ALTER TABLE drift_runs ADD COLUMN adjusted_p_value DOUBLE;   -- Holm across the alias's signals
        ALTER TABLE drift_runs ADD COLUMN min_detectable_shift DOUBLE;  -- share at 90% power
        """,
    ),
    Migration(
        7,
        "fleet_ingest",
        """
        -- Which sidecar captured a row (NULL: `driftloop serve` wrote it directly).
        ALTER TABLE requests ADD COLUMN sidecar_id VARCHAR;
        -- Every capture shard the controller has read from object storage, exactly once each:
        -- its rows and this row commit in one transaction (monitor/capture_table.py).
        CREATE TABLE ingested_shards (
            shard_key     VARCHAR PRIMARY KEY,  -- the object's key under the store's prefix
            sidecar_id    VARCHAR,
            status        VARCHAR NOT NULL,     -- ingested | quarantined
            rows          BIGINT NOT NULL,
            bytes         BIGINT NOT NULL,
            error         VARCHAR,              -- why it was quarantined
            uploaded_at   TIMESTAMPTZ,          -- the object's last-modified time
            ingested_at   TIMESTAMPTZ NOT NULL DEFAULT now()
        );
        """,
    ),
)
