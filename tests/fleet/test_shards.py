"""Capture shards end to end on one machine: writer -> shard sink -> spool -> store -> ingest.

The object store here is a local folder (the same obstore calls as S3; tests/fleet/test_fleet.py
runs them against a real SeaweedFS). DuckDB is a real file.
"""

from __future__ import annotations

import json

import pyarrow as pa
import pytest
from prometheus_client import CollectorRegistry

from monitor.capture import CapturedExchange, rows_to_arrow, to_row
from monitor.fleet_metrics import IngestMetrics, ShardMetrics
from monitor.ingest import ShardIngest, read_shard
from monitor.metrics import SidecarMetrics
from monitor.object_store import ObjectStore, ObjectStoreError
from monitor.schema import MIGRATIONS
from monitor.shard_sink import ShardSink
from monitor.shard_spool import ShardSpool, SpoolFullError, Uploader, shard_key
from monitor.store import Store
from monitor.writer import CaptureWriter


def exchange(i: int, alias: str = "support") -> CapturedExchange:
    body = {"choices": [{"message": {"content": f"answer {i}"}, "finish_reason": "stop"}]}
    return CapturedExchange(
        request_id=f"req-{i:05d}",
        started_at=1_764_600_000.0 + i,
        route="chat_completions",
        model_alias=alias,
        served_model="smollm2",
        stream=False,
        request_body=json.dumps(
            {"model": alias, "messages": [{"role": "user", "content": f"q{i}"}]}
        ).encode(),
        status_code=200,
        response_body=json.dumps(body).encode(),
    )


class Sidecar:
    """One sidecar's capture path with a shard sink, as `driftloop sidecar` wires it."""

    def __init__(self, tmp_path, name: str, objects: ObjectStore, **sink_options):
        registry = CollectorRegistry()
        self.metrics = ShardMetrics(registry)
        self.registry = registry
        self.spool = ShardSpool(tmp_path / f"spool-{name}", 2**20, self.metrics)
        self.sink = ShardSink(self.spool, name, self.metrics, **sink_options)
        self.uploader = Uploader(
            self.spool, objects, self.metrics, tick=self.sink.seal_if_due, rename=self.sink.rename
        )
        self.writer = CaptureWriter(self.sink, SidecarMetrics(registry), flush_interval_s=0.05)
        self.writer.start()

    def close(self) -> None:
        self.writer.close()
        self.sink.close()
        self.uploader.upload_pending()


def controller(tmp_path, objects: ObjectStore) -> tuple[Store, ShardIngest, CollectorRegistry]:
    registry = CollectorRegistry()
    store = Store.open(tmp_path / "controller.duckdb", migrations=MIGRATIONS)
    return store, ShardIngest(store, objects, IngestMetrics(registry)), registry


def test_rows_from_two_sidecars_are_ingested_exactly_once_with_their_sidecar(tmp_path):
    objects = ObjectStore.open(str(tmp_path / "bucket"))
    sidecars = [Sidecar(tmp_path, f"replica-{n}", objects, max_bytes=4096) for n in (1, 2)]
    for n, sidecar in enumerate(sidecars):
        for i in range(60):
            sidecar.writer.submit(exchange(n * 1000 + i))
            if i % 10 == 9:
                assert sidecar.writer.flush()  # one writer batch per 10 rows
    for sidecar in sidecars:
        sidecar.close()
    assert len(objects.list("captures/")) > 2  # 4 KiB shards: several per sidecar

    store, ingest, registry = controller(tmp_path, objects)
    assert ingest.run() == 120
    assert ingest.run() == 0  # the second pass finds nothing new
    rows = store.query(
        "SELECT sidecar_id, count(*), count(DISTINCT request_id) FROM requests GROUP BY 1 ORDER BY 1"
    )
    assert rows == [("replica-1", 60, 60), ("replica-2", 60, 60)]
    assert registry.get_sample_value("driftloop_ingest_lag_seconds") == 0
    # a restarted controller remembers what it loaded
    store.close()
    store, ingest, _ = controller(tmp_path, objects)
    assert ingest.run() == 0
    assert store.query("SELECT count(*) FROM requests")[0][0] == 120
    store.close()


def test_a_loader_that_finds_shards_already_loaded_adds_nothing_and_loads_the_rest(tmp_path):
    """Many shards commit together; one already loaded elsewhere fails only itself."""
    objects = ObjectStore.open(str(tmp_path / "bucket"))
    sidecar = Sidecar(tmp_path, "replica-1", objects, max_bytes=4096)
    for i in range(60):
        sidecar.writer.submit(exchange(i))
        if i % 10 == 9:
            assert sidecar.writer.flush()
    sidecar.close()
    shards = objects.list("captures/")
    assert len(shards) > 2
    registry = CollectorRegistry()
    store = Store.open(tmp_path / "controller.duckdb", migrations=MIGRATIONS)
    late = ShardIngest(store, objects, IngestMetrics(registry))  # knows of no loaded shard
    first = ShardIngest(store, objects, IngestMetrics(CollectorRegistry()), rows_per_commit=1)
    first.run()  # loads every shard, one per commit
    newest = max(shards, key=lambda o: o.key).key
    newest_ids = read_shard(objects.get(newest)).column("request_id").to_pylist()
    for request_id in newest_ids:  # as if the newest shard had not been loaded yet
        store.execute("DELETE FROM requests WHERE request_id = ?", [request_id])
    store.execute("DELETE FROM ingested_shards WHERE shard_key = ?", [newest])
    assert late.run() == len(newest_ids)
    rows = store.query("SELECT count(*), count(DISTINCT request_id) FROM requests")[0]
    assert rows == (60, 60)
    assert registry.get_sample_value("driftloop_ingest_shards_total", {"outcome": "ingested"}) == 1
    store.close()


def test_a_corrupt_shard_is_quarantined_counted_and_the_rest_ingested(tmp_path):
    objects = ObjectStore.open(str(tmp_path / "bucket"))
    sidecar = Sidecar(tmp_path, "replica-1", objects)
    for i in range(10):
        sidecar.writer.submit(exchange(i))
    sidecar.close()
    bad = shard_key("replica-9", 1, 1_764_600_000.0)
    objects.put_new(bad, b"PAR1 this is not parquet")
    wrong = pa.table({"request_id": ["x"]})
    sink = pa.BufferOutputStream()
    pa.parquet.write_table(wrong, sink)
    objects.put_new(shard_key("replica-9", 2, 1_764_600_000.0), sink.getvalue().to_pybytes())

    store, ingest, registry = controller(tmp_path, objects)
    assert ingest.run() == 10
    assert (
        registry.get_sample_value("driftloop_ingest_shards_total", {"outcome": "quarantined"}) == 2
    )
    assert registry.get_sample_value("driftloop_ingest_shards_total", {"outcome": "ingested"}) == 1
    reasons = dict(
        store.query("SELECT shard_key, error FROM ingested_shards WHERE status = 'quarantined'")
    )
    assert "not a readable Parquet file" in reasons[bad]
    assert any("missing columns" in r for r in reasons.values())
    assert ingest.run() == 0
    assert (
        registry.get_sample_value("driftloop_ingest_shards_total", {"outcome": "quarantined"}) == 2
    )
    store.close()


class Unreachable(ObjectStore):
    """An object store that is down until ``up`` is set (a stopped server; see test_fleet.py)."""

    def __init__(self, inner: ObjectStore):
        self.inner, self.up, self.url = inner, False, inner.url

    def put_new(self, key: str, data: bytes) -> bool:
        if not self.up:
            raise ObjectStoreError("connection refused")
        return self.inner.put_new(key, data)


def test_shards_wait_in_the_spool_while_storage_is_down_then_upload_once(tmp_path):
    backend = ObjectStore.open(str(tmp_path / "bucket"))
    down = Unreachable(backend)
    sidecar = Sidecar(tmp_path, "replica-1", down, max_bytes=2048)
    for i in range(40):
        sidecar.writer.submit(exchange(i))
        if i % 10 == 9:
            assert sidecar.writer.flush()
    sidecar.sink.close()
    assert not sidecar.uploader.upload_pending()
    spooled = sidecar.spool.pending()
    assert spooled and backend.list("captures/") == []
    assert sidecar.registry.get_sample_value("driftloop_spool_shards") == len(spooled)
    assert sidecar.registry.get_sample_value("driftloop_object_store_up") == 0

    down.up = True
    assert sidecar.uploader.upload_pending()
    assert sidecar.spool.pending() == []
    assert [o.key for o in backend.list("captures/")] == spooled
    # an upload whose reply was lost is retried: the same bytes are already there, no copy
    assert backend.put_new(spooled[0], backend.get(spooled[0])) is False
    sidecar.writer.close()
    store, ingest, _ = controller(tmp_path, backend)
    assert ingest.run() == 40
    store.close()


def test_a_full_spool_refuses_shards_and_the_writer_keeps_the_rows(tmp_path):
    metrics = ShardMetrics(CollectorRegistry())
    spool = ShardSpool(tmp_path / "spool", 100, metrics)
    spool.add(shard_key("a", 1, 0.0), b"x" * 80)
    with pytest.raises(SpoolFullError, match="spool_max_bytes = 100"):
        spool.add(shard_key("a", 2, 0.0), b"y" * 80)
    assert spool.pending() == [shard_key("a", 1, 0.0)]
    # a restarted sidecar finds what was spooled
    assert ShardSpool(tmp_path / "spool", 100, metrics).pending() == [shard_key("a", 1, 0.0)]


def test_a_full_spool_holds_the_open_shard_until_uploads_free_it(tmp_path):
    backend = ObjectStore.open(str(tmp_path / "bucket"))
    down = Unreachable(backend)
    metrics = ShardMetrics(CollectorRegistry())
    spool = ShardSpool(tmp_path / "spool", 2**20, metrics)
    now = [1_764_600_000.0]
    sink = ShardSink(spool, "replica-1", metrics, max_age_s=1.0, clock=lambda: now[0])
    uploader = Uploader(spool, down, metrics, tick=sink.seal_if_due)

    def tick_after(rows: range) -> None:
        sink.append("requests", rows_to_arrow([to_row(exchange(i), str) for i in rows]))
        now[0] += 2
        sink.seal_if_due()  # the uploader's tick: never raises, even with the spool full

    tick_after(range(20))
    assert len(spool.pending()) == 1
    spool.max_bytes = spool.bytes + 1  # storage is down and the spool is now full
    tick_after(range(20, 40))
    assert len(spool.pending()) == 1  # the second shard is held open, not lost
    assert not uploader.upload_pending()

    down.up = True
    assert uploader.upload_pending() and spool.pending() == []
    sink.seal_if_due()  # room again: the held rows are sealed
    assert uploader.upload_pending() and spool.pending() == []
    store, ingest, _ = controller(tmp_path, backend)
    assert ingest.run() == 40
    store.close()
