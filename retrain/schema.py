"""The retrain loop's tables: feedback, runs and decisions, datasets, the adapter registry, evaluations, deployments, operator switches, canaries, teacher calls."""

from __future__ import annotations

from monitor.schema import Migration

# Each table has one writer module; tests/test_table_ownership.py names them. Comments below
# document values only (a migration's effect never changes once shipped).
# Versions are global (one ``schema_migrations`` sequence per file): take the next free number
# across every package's migrations, never reuse one, never edit one that has shipped.
MIGRATIONS: tuple[Migration, ...] = (
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
            trigger     VARCHAR NOT NULL,     -- drift | quality | volume | schedule | manual | none
            decision    VARCHAR NOT NULL,     -- triggered | not_triggered | suppressed | dry_run
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
            status       VARCHAR NOT NULL,    -- running | shipped | staged | rejected | failed
            stage        VARCHAR,             -- the stage it is in, or ended in
            error        VARCHAR,
            drift_run_id BIGINT,              -- the drift evaluation that tripped it
            dataset_id   VARCHAR,
            adapter_id   VARCHAR,
            timeline     VARCHAR              -- JSON list of {stage, started_at, seconds, note}
        );
        CREATE TABLE datasets (
            id          VARCHAR PRIMARY KEY,  -- content hash (retrain.data.dataset)
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
            action      VARCHAR NOT NULL,     -- deploy | promote | pin | rollback
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
    Migration(
        9,
        "fleet_adapters",
        """
        ALTER TABLE adapters ADD COLUMN object_key VARCHAR;  -- its bundle in object storage
        ALTER TABLE adapters ADD COLUMN digest VARCHAR;      -- SHA-256 of the bundle's manifest
        CREATE TABLE fleet_adapters (         -- versions the fleet's replicas must hold
            served_name  VARCHAR PRIMARY KEY,
            model_alias  VARCHAR NOT NULL,
            object_key   VARCHAR NOT NULL,
            digest       VARCHAR NOT NULL,
            sidecars     VARCHAR,             -- JSON list of sidecar ids; NULL: every replica
            wanted_since TIMESTAMPTZ NOT NULL
        );
        """,
    ),
    Migration(
        10,
        "canaries",
        """
        CREATE SEQUENCE canaries_seq;
        CREATE TABLE canaries (               -- one row per canary release, with its decision
            id          BIGINT PRIMARY KEY DEFAULT nextval('canaries_seq'),
            model_alias VARCHAR NOT NULL,
            adapter_id  VARCHAR NOT NULL,
            served_name VARCHAR NOT NULL,     -- the candidate
            production  VARCHAR NOT NULL,     -- what the rest of the traffic was served by
            share       DOUBLE NOT NULL,
            started_at  TIMESTAMPTZ NOT NULL,
            state       VARCHAR NOT NULL,     -- running | promoted | rolled_back | aborted
            decided_at  TIMESTAMPTZ,
            actor       VARCHAR NOT NULL,     -- who started it, then who decided
            reason      VARCHAR NOT NULL,
            numbers     VARCHAR               -- JSON: the comparison the decision was made on
        );
        """,
    ),
    Migration(
        11,
        "teacher_calls",
        """
        CREATE SEQUENCE teacher_calls_seq;
        CREATE TABLE teacher_calls (          -- one row per drifted prompt sent to a teacher
            id                BIGINT PRIMARY KEY DEFAULT nextval('teacher_calls_seq'),
            called_at         TIMESTAMPTZ NOT NULL,
            model_alias       VARCHAR NOT NULL,
            run_id            VARCHAR NOT NULL,   -- the retrain run it labelled for
            teacher           VARCHAR NOT NULL,   -- the teacher's model name
            request_id        VARCHAR NOT NULL,   -- the captured prompt it answered
            outcome           VARCHAR NOT NULL,   -- accepted | format | <rule kind> | error:<kind>
            reason            VARCHAR NOT NULL,
            prompt_tokens     INTEGER NOT NULL,
            completion_tokens INTEGER NOT NULL,
            attempts          INTEGER NOT NULL,   -- HTTP attempts (the budget counts them)
            seconds           DOUBLE NOT NULL
        );
        """,
    ),
    Migration(
        13,
        "feedback_preferences",
        """
        -- A preference pair: the answer the operator does not want beside the one it does.
        -- NULL with a request_id: the captured answer of that exchange is the rejected one.
        ALTER TABLE feedback ADD COLUMN rejected VARCHAR;
        """,
    ),
)
