"""Metrics of the fleet's data path: a sidecar's shards and spool, the controller's ingest."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge


class ShardMetrics:
    """A sidecar's shard writer and uploader (the capture writer's own metrics stay as they are)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.sealed = Counter(
            "driftloop_shards_sealed_total",
            "Capture shards written to the local spool (Parquet, zstd).",
            registry=registry,
        )
        self.uploads = Counter(
            "driftloop_shard_uploads_total",
            "Shard uploads by outcome: uploaded | already_there (a retry of a lost reply) |"
            " renamed (a name collision) | failed (kept in the spool, retried).",
            ["outcome"],
            registry=registry,
        )
        self.spool_bytes = Gauge(
            "driftloop_spool_bytes",
            "Bytes of shards waiting in the local spool for object storage.",
            registry=registry,
        )
        self.spool_shards = Gauge(
            "driftloop_spool_shards",
            "Shards waiting in the local spool for object storage.",
            registry=registry,
        )
        self.store_up = Gauge(
            "driftloop_object_store_up",
            "1 when the last upload or listing of object storage succeeded.",
            registry=registry,
        )


class IngestMetrics:
    """The controller's ingest of shards from object storage."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.shards = Counter(
            "driftloop_ingest_shards_total",
            "Shards read from object storage by outcome: ingested | quarantined (cannot be read).",
            ["outcome"],
            registry=registry,
        )
        self.rows = Counter(
            "driftloop_ingest_rows_total",
            "Captured rows loaded into DuckDB from shards.",
            registry=registry,
        )
        self.lag = Gauge(
            "driftloop_ingest_lag_seconds",
            "Age of the oldest shard in object storage not yet ingested (0: none waiting).",
            registry=registry,
        )
        self.store_up = Gauge(
            "driftloop_object_store_up",
            "1 when the last listing of object storage succeeded.",
            registry=registry,
        )
        self.sidecar_last_seen = Gauge(
            "driftloop_sidecar_last_seen_timestamp_seconds",
            "When each sidecar last fetched the routing table (one series per sidecar id).",
            ["sidecar"],
            registry=registry,
        )
        self.sidecar_routing_version = Gauge(
            "driftloop_sidecar_routing_version",
            "The routing table version each sidecar reported it applies.",
            ["sidecar"],
            registry=registry,
        )
        self.routing_version = Gauge(
            "driftloop_routing_version",
            "The controller's current routing table version.",
            registry=registry,
        )
