"""Fleet ingest at scale: N sidecar processes sealing shards, one controller loading them.

Each simulated sidecar is its own process running the real shard path (``ShardSink`` ->
``ShardSpool`` -> ``Uploader`` -> object store) on synthetic captured rows spread over
``--aliases`` aliases; nothing is proxied (the proxy's cost is ``benchmarks/proxy_overhead.py``).
The controller is this process: ``ShardIngest`` into a real DuckDB file, pass after pass, for
``--seconds``. It prints rows/s ingested, the ingest lag (p50/p99 of the gauge after each pass),
bytes stored per million rows, controller CPU-seconds per million rows, and the ingest capacity
(rows per second of time inside ingest passes) against the baseline of the same run: one process
reading the same shards back with pyarrow alone (get + Parquet decode, no DuckDB). Then the
controller pauses for ``--backlog-seconds`` while the sidecars go on, the sidecars stop, and it
loads the backlog: the catch-up rate is what one controller ingests when it has the CPU.

    python -m benchmarks.fleet_scale                        # 8 sidecars, 50 aliases, 60 s, folder
    python -m benchmarks.fleet_scale --store s3://bucket --endpoint http://127.0.0.1:8333
"""

from __future__ import annotations

import argparse
import io
import json
import multiprocessing as mp
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from prometheus_client import CollectorRegistry

from monitor.capture import REQUESTS_SCHEMA
from monitor.fleet_metrics import IngestMetrics, ShardMetrics
from monitor.ingest import ShardIngest
from monitor.object_store import ObjectStore
from monitor.schema import MIGRATIONS
from monitor.shard_sink import ShardSink
from monitor.shard_spool import PREFIX, ShardSpool, Uploader
from monitor.store import Store

RESULTS = Path(__file__).resolve().parent / "results"
BATCH = 500


def synthetic_batch(sidecar: int, start: int, aliases: int) -> pa.Table:
    """BATCH captured rows shaped like chat traffic (prompt ~200 B, answer ~400 B)."""
    n = range(start, start + BATCH)
    now = time.time()
    columns: dict[str, Any] = {
        "request_id": [f"s{sidecar}-{i}" for i in n],
        "started_at": pa.array([int((now + i * 1e-4) * 1e6) for i in n], pa.int64()).cast(
            REQUESTS_SCHEMA.field("started_at").type
        ),
        "route": ["chat_completions"] * BATCH,
        "model_alias": [f"alias-{i % aliases}" for i in n],
        "served_model": [f"alias-{i % aliases}-v1" for i in n],
        "stream": [i % 2 == 0 for i in n],
        "request_json": [None] * BATCH,
        "prompt_text": [f"user: question {i} about topic {i % 97} " + "x" * 160 for i in n],
        "response_text": [f"answer {i} " + "y" * 390 for i in n],
        "finish_reason": ["stop"] * BATCH,
        "prompt_tokens": [40 + i % 50 for i in n],
        "completion_tokens": [80 + i % 90 for i in n],
        "status_code": [200] * BATCH,
        "latency_s": [0.5] * BATCH,
        "ttft_s": [0.05] * BATCH,
        "upstream_id": [f"chatcmpl-{i}" for i in n],
        "error": [None] * BATCH,
        "session_key": [f"s{sidecar}-session-{i // 4}" for i in n],
    }
    return pa.table(
        {f.name: pa.array(columns[f.name], f.type) for f in REQUESTS_SCHEMA},
        schema=REQUESTS_SCHEMA,
    )


def sidecar_main(number: int, args: argparse.Namespace, stop: Any, spool_root: str) -> None:
    metrics = ShardMetrics(CollectorRegistry())
    spool = ShardSpool(Path(spool_root) / f"spool-{number}", 2**31, metrics)
    sink = ShardSink(spool, f"sidecar-{number}", metrics, max_age_s=args.shard_age)
    uploader = Uploader(spool, open_store(args), metrics, tick=sink.seal_if_due, interval_s=0.25)
    uploader.start()
    interval = BATCH / args.rate
    sent, next_at = 0, time.monotonic()
    while not stop.is_set():
        sink.append("requests", synthetic_batch(number, sent, args.aliases))
        sent += BATCH
        next_at += interval
        time.sleep(max(0.0, next_at - time.monotonic()))
    sink.close()
    uploader.close()


def open_store(args: argparse.Namespace) -> ObjectStore:
    return ObjectStore.open(args.store, endpoint=args.endpoint, access_key=args.access_key,
                            secret_key=args.secret_key)  # fmt: skip


def pyarrow_baseline(objects: ObjectStore, limit: int = 50) -> float:
    """Rows/s one process reads the same shards with (get + Parquet decode, no DuckDB)."""
    keys = [o.key for o in objects.list(PREFIX)][:limit]
    started, rows = time.perf_counter(), 0
    for key in keys:
        rows += pq.read_table(io.BytesIO(objects.get(key))).num_rows
    return rows / (time.perf_counter() - started)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sidecars", type=int, default=8)
    parser.add_argument("--aliases", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--rate", type=float, default=15000, help="rows/s per sidecar")
    parser.add_argument("--shard-age", type=float, default=2.0)
    parser.add_argument(
        "--backlog-seconds", type=float, default=30.0, help="controller paused, then catches up"
    )
    parser.add_argument("--store", default="", help="s3://bucket/prefix or a folder (default: tmp)")
    parser.add_argument("--endpoint", default="")
    parser.add_argument("--access-key", default=None)
    parser.add_argument("--secret-key", default=None)
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="fleet-scale-"))
    args.store = args.store or str(work / "objects")
    objects = open_store(args)
    store = Store.open(work / "controller.duckdb", migrations=MIGRATIONS)
    registry = CollectorRegistry()
    ingest = ShardIngest(store, objects, IngestMetrics(registry), full_scan_every=10**9)
    stop = mp.get_context("spawn").Event()
    ctx = mp.get_context("spawn")
    workers = [
        ctx.Process(target=sidecar_main, args=(n, args, stop, str(work)), daemon=True)
        for n in range(args.sidecars)
    ]
    for worker in workers:
        worker.start()
    print(f"{args.sidecars} sidecars x {args.rate:,.0f} rows/s, {args.aliases} aliases, "
          f"{args.seconds:.0f} s, store {objects.url}")  # fmt: skip
    lags, rows, cpu, busy, started = [], 0, 0.0, 0.0, time.monotonic()
    last_report = started
    while time.monotonic() - started < args.seconds:
        cpu_before, wall_before = time.process_time(), time.perf_counter()
        rows += ingest.run()
        cpu += time.process_time() - cpu_before
        busy += time.perf_counter() - wall_before
        lags.append(registry.get_sample_value("driftloop_ingest_lag_seconds") or 0.0)
        if time.monotonic() - last_report > 10:
            last_report = time.monotonic()
            elapsed = last_report - started
            print(f"  {elapsed:5.0f} s: {rows:,} rows ingested ({rows / elapsed:,.0f}/s), "
                  f"lag {lags[-1]:.1f} s")  # fmt: skip
        time.sleep(0.2)
    elapsed = time.monotonic() - started
    # Catch-up: the controller pauses while the sidecars go on, then loads the backlog alone (the
    # generators stopped), as a controller on its own machine would after an outage.
    print(f"  paused for {args.backlog_seconds:.0f} s while the sidecars go on")
    time.sleep(args.backlog_seconds)
    stop.set()
    for worker in workers:
        worker.join(30)
    catch_up_rows, cpu_before, wall_before = 0, time.process_time(), time.perf_counter()
    while (loaded := ingest.run()) > 0:
        catch_up_rows += loaded
    catch_up_s = time.perf_counter() - wall_before
    catch_up_cpu = time.process_time() - cpu_before
    stored = sum(o.size for o in objects.list(PREFIX))
    shards = len(objects.list(PREFIX))
    rows_stored = store.query("SELECT count(*) FROM requests")[0][0]
    baseline = pyarrow_baseline(objects)
    result = {
        "date": time.strftime("%Y-%m-%d"),
        "sidecars": args.sidecars,
        "aliases": args.aliases,
        "seconds": round(elapsed, 1),
        "offered_rows_per_s": args.sidecars * args.rate,
        "ingested_rows_per_s": round(rows / elapsed),
        "ingested_rows": rows,
        "lag_p50_s": round(statistics.median(lags), 2),
        "lag_p99_s": round(sorted(lags)[int(0.99 * (len(lags) - 1))], 2),
        "shards": shards,
        "bytes_stored_per_million_rows": round(stored / max(rows_stored, 1) * 1e6),
        "controller_cpu_s_per_million_rows": round(cpu / max(rows, 1) * 1e6, 2),
        "baseline_pyarrow_read_rows_per_s": round(baseline),
        # What the controller could take: rows per second of time spent inside ingest passes.
        "ingest_capacity_rows_per_s": round(rows / busy) if busy else None,
        "ingest_capacity_vs_pyarrow_read": round(rows / busy / baseline, 3) if busy else None,
        "catch_up_rows": catch_up_rows,
        "catch_up_rows_per_s": round(catch_up_rows / catch_up_s) if catch_up_s else None,
        "catch_up_vs_pyarrow_read": round(catch_up_rows / catch_up_s / baseline, 3)
        if catch_up_s
        else None,
        "catch_up_cpu_s_per_million_rows": round(catch_up_cpu / max(catch_up_rows, 1) * 1e6, 2),
    }
    print(json.dumps(result, indent=2))
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"fleet_scale-{result['date']}.json").write_text(json.dumps(result, indent=2))
    store.close()


if __name__ == "__main__":
    main()
