"""The DuckDB schema as numbered migrations; applied in order, each exactly once."""

from __future__ import annotations

from typing import NamedTuple


class Migration(NamedTuple):
    version: int
    name: str
    sql: str


# Append new migrations at the end; never edit one that has shipped.
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
        2,
        "audit_log",
        """
        CREATE SEQUENCE audit_log_seq;
        CREATE TABLE audit_log (
            id          BIGINT PRIMARY KEY DEFAULT nextval('audit_log_seq'),
            occurred_at TIMESTAMPTZ NOT NULL DEFAULT now(),
            actor       VARCHAR NOT NULL,   -- who called: the token's name, or 'anonymous'
            client      VARCHAR,            -- peer address
            method      VARCHAR NOT NULL,
            path        VARCHAR NOT NULL,
            status_code INTEGER NOT NULL,
            detail      VARCHAR             -- request parameters or the error, as JSON
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
        4,
        "judgments",
        """
        CREATE SEQUENCE judgments_seq;
        CREATE TABLE judgments (
            id                BIGINT PRIMARY KEY DEFAULT nextval('judgments_seq'),
            request_id        VARCHAR NOT NULL,   -- requests.request_id, or an anchor item id
            source            VARCHAR NOT NULL,   -- traffic | anchor
            model_alias       VARCHAR,
            judge             VARCHAR NOT NULL,   -- configured judge name
            judge_model       VARCHAR,            -- model behind an LLM judge; NULL for rule judges
            rubric_version    VARCHAR,            -- content hash of the rubric file
            content_hash      VARCHAR NOT NULL,   -- sha256 of (judge, rubric_version, judge_model, prompt, response)
            outcome           VARCHAR NOT NULL,   -- scored | unparseable | error | budget_exhausted
            cached            BOOLEAN NOT NULL DEFAULT false,  -- verdict reused from an identical pair
            score             DOUBLE,             -- 1-5; NULL unless outcome = scored
            reason            VARCHAR,            -- the judge's reason, or why there is no score
            raw_verdict       VARCHAR,            -- the judge's text, truncated
            prompt_tokens     INTEGER,
            completion_tokens INTEGER,
            attempts          INTEGER,            -- HTTP attempts, retries included
            latency_s         DOUBLE,
            created_at        TIMESTAMPTZ NOT NULL
        );
        CREATE SEQUENCE judge_anchor_runs_seq;
        CREATE TABLE judge_anchor_runs (
            id           BIGINT PRIMARY KEY DEFAULT nextval('judge_anchor_runs_seq'),
            run_at       TIMESTAMPTZ NOT NULL,
            judge          VARCHAR NOT NULL,
            judge_model    VARCHAR,
            rubric_version VARCHAR NOT NULL,
            anchor_set     VARCHAR NOT NULL,     -- content hash of the anchor file
            n_scored     INTEGER NOT NULL,
            n_items      INTEGER NOT NULL,
            mean_score   DOUBLE,
            baseline     DOUBLE,                 -- mean of the first run on this anchor set
            shift        DOUBLE,                 -- mean_score - baseline
            drifted      BOOLEAN NOT NULL,
            reason       VARCHAR NOT NULL
        );
        """,
    ),
    Migration(
        5,
        "retrain_loop",
        """
        CREATE TABLE feedback (
            id          VARCHAR PRIMARY KEY,  -- uuid4 hex
            received_at TIMESTAMPTZ NOT NULL,
            model_alias VARCHAR NOT NULL,
            prompt      VARCHAR NOT NULL,
            answer      VARCHAR NOT NULL,     -- the answer the operator wants (a correction)
            request_id  VARCHAR,              -- the captured exchange it corrects, if any
            actor       VARCHAR NOT NULL
        );
        CREATE SEQUENCE retrain_decisions_seq;
        CREATE TABLE retrain_decisions (      -- every trigger evaluation, also "not triggered"
            id          BIGINT PRIMARY KEY DEFAULT nextval('retrain_decisions_seq'),
            decided_at  TIMESTAMPTZ NOT NULL,
            model_alias VARCHAR NOT NULL,
            trigger     VARCHAR NOT NULL,     -- drift | quality | volume | schedule | manual
            decision    VARCHAR NOT NULL,     -- triggered | suppressed | dry_run
            reason      VARCHAR NOT NULL,
            run_id      VARCHAR               -- the retrain run it started
        );
        CREATE TABLE retrain_runs (
            id           VARCHAR PRIMARY KEY,
            model_alias  VARCHAR NOT NULL,
            trigger      VARCHAR NOT NULL,
            reason       VARCHAR NOT NULL,
            started_at   TIMESTAMPTZ NOT NULL,
            finished_at  TIMESTAMPTZ,
            status       VARCHAR NOT NULL,    -- running | shipped | rejected | failed
            stage        VARCHAR,             -- the stage it is in, or ended in
            error        VARCHAR,
            drift_run_id BIGINT,              -- the drift evaluation that tripped it
            dataset_id   VARCHAR,
            adapter_id   VARCHAR,
            timeline     VARCHAR              -- JSON list of {stage, started_at, seconds, note}
        );
        CREATE TABLE datasets (
            id          VARCHAR PRIMARY KEY,  -- content hash (retrain.dataset)
            model_alias VARCHAR NOT NULL,
            created_at  TIMESTAMPTZ NOT NULL,
            path        VARCHAR NOT NULL,
            manifest    VARCHAR NOT NULL      -- JSON copy of the dataset's manifest.json
        );
        CREATE TABLE adapters (
            id           VARCHAR PRIMARY KEY, -- content hash of the adapter files
            model_alias  VARCHAR NOT NULL,
            version      INTEGER NOT NULL,    -- 1, 2, ... per alias
            served_name  VARCHAR NOT NULL,    -- name vLLM serves it under: <alias>-v<version>
            path         VARCHAR NOT NULL,
            status       VARCHAR NOT NULL,    -- training | evaluating | staging | production
                                              -- | deprecated | failed | rejected
            dataset_id   VARCHAR,
            run_id       VARCHAR,
            created_at   TIMESTAMPTZ NOT NULL,
            updated_at   TIMESTAMPTZ NOT NULL
        );
        CREATE SEQUENCE adapter_events_seq;
        CREATE TABLE adapter_events (         -- every status change, with who and why
            id          BIGINT PRIMARY KEY DEFAULT nextval('adapter_events_seq'),
            adapter_id  VARCHAR NOT NULL,
            occurred_at TIMESTAMPTZ NOT NULL,
            from_status VARCHAR,
            to_status   VARCHAR NOT NULL,
            actor       VARCHAR NOT NULL,     -- loop | operator
            reason      VARCHAR NOT NULL
        );
        CREATE TABLE evaluations (
            id          VARCHAR PRIMARY KEY,
            adapter_id  VARCHAR NOT NULL,
            created_at  TIMESTAMPTZ NOT NULL,
            golden_set  VARCHAR NOT NULL,     -- name@version
            passed      BOOLEAN NOT NULL,
            summary     VARCHAR NOT NULL,     -- JSON: reasons and per-category metrics
            report_path VARCHAR               -- the HTML report
        );
        CREATE SEQUENCE deployments_seq;
        CREATE TABLE deployments (
            id          BIGINT PRIMARY KEY DEFAULT nextval('deployments_seq'),
            occurred_at TIMESTAMPTZ NOT NULL,
            model_alias VARCHAR NOT NULL,
            adapter_id  VARCHAR,              -- NULL: the base model
            served_name VARCHAR NOT NULL,
            previous    VARCHAR,              -- served name routed before
            action      VARCHAR NOT NULL,     -- deploy | rollback | pin | reconcile
            state       VARCHAR NOT NULL,     -- loading | switched | failed
            actor       VARCHAR NOT NULL,
            reason      VARCHAR NOT NULL
        );
        CREATE TABLE loop_controls (          -- operator switches per alias
            model_alias VARCHAR PRIMARY KEY,
            paused      BOOLEAN NOT NULL DEFAULT false,
            pinned      VARCHAR,              -- adapter id the alias is pinned to
            updated_at  TIMESTAMPTZ NOT NULL
        );
        """,
    ),
)
