"""The judges' tables: ``judgments`` (one row per verdict) and ``judge_anchor_runs``."""

from __future__ import annotations

from monitor.schema import Migration

# Written only by judges.judgments (judgments) and judges.anchors (judge_anchor_runs).
# Versions are global (one ``schema_migrations`` sequence per file): take the next free number
# across every package's migrations, never reuse one, never edit one that has shipped.
MIGRATIONS: tuple[Migration, ...] = (
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
        12,
        "judge_calibrations",
        """
        CREATE SEQUENCE judge_calibrations_seq;
        CREATE TABLE judge_calibrations (     -- every `judges calibrate` recorded by the service
            id             BIGINT PRIMARY KEY DEFAULT nextval('judge_calibrations_seq'),
            created_at     TIMESTAMPTZ NOT NULL,
            judge          VARCHAR NOT NULL,
            judge_model    VARCHAR,
            rubric_version VARCHAR NOT NULL,
            labelled_set   VARCHAR NOT NULL,  -- content hash of the labelled file
            n_items        INTEGER NOT NULL,
            parsed         DOUBLE NOT NULL,
            exact          DOUBLE NOT NULL,
            kappa          DOUBLE,            -- NULL: undefined (no parsed pair)
            min_kappa      DOUBLE NOT NULL,
            min_parsed     DOUBLE NOT NULL,
            flagged        BOOLEAN NOT NULL
        );
        """,
    ),
)
