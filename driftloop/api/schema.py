"""The control API's tables: ``audit_log`` (every call, written by driftloop.api.audit) and
``routing_changes`` (every alias change of the fleet's routing table, written by
driftloop.api.routing_log)."""

from __future__ import annotations

from monitor.schema import Migration

# audit_log belongs to the control API: only the controller's API writes it.
# Versions are global (one ``schema_migrations`` sequence per file): take the next free number
# across every package's migrations, never reuse one, never edit one that has shipped.
MIGRATIONS: tuple[Migration, ...] = (
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
        8,
        "routing_changes",
        """
        CREATE TABLE routing_changes (
            version      BIGINT PRIMARY KEY, -- the routing table's version after this change
            changed_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
            alias        VARCHAR NOT NULL,
            served_model VARCHAR NOT NULL,
            reason       VARCHAR NOT NULL
        );
        """,
    ),
)
