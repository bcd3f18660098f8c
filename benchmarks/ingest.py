"""Rows per second into DuckDB through the real capture writer, against two baselines run alongside.

    .venv/bin/python -m benchmarks.ingest [--rows 200000]

- writer: ``CaptureWriter.submit`` of realistic chat exchanges (JSON request and response bodies
  parsed in the writer thread), timed from the first submit until every row is in DuckDB;
- arrow floor: the same rows, pre-built as one Arrow table, in one ``INSERT ... SELECT``: what
  DuckDB itself costs, with no parsing;
- executemany: the row-by-row insert a naive design would use (run on fewer rows: it is slow).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from prometheus_client import CollectorRegistry

from monitor.capture import CapturedExchange, Redact, rows_to_arrow, to_row
from monitor.metrics import SidecarMetrics
from monitor.redaction import DETECTORS, PatternRedactor
from monitor.store import Store
from monitor.writer import CaptureWriter

PROMPT = "How do I reset the password of my account when the recovery email no longer works? " * 3
ANSWER = "Open Settings, choose Security, then Reset password and follow the steps shown. " * 3


def make_exchange(i: int) -> CapturedExchange:
    request = {"model": "support", "messages": [{"role": "user", "content": f"{PROMPT} #{i}"}]}
    response = {
        "id": f"chatcmpl-{i}",
        "object": "chat.completion",
        "model": "support",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": ANSWER},
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 60, "completion_tokens": 50, "total_tokens": 110},
    }
    return CapturedExchange(
        request_id=f"{i:032x}",
        started_at=1_700_000_000.0 + i / 1000,
        route="chat_completions",
        model_alias="support",
        served_model="smollm2",
        stream=False,
        request_body=json.dumps(request).encode(),
        status_code=200,
        response_body=json.dumps(response).encode(),
        latency_s=0.5,
        ttft_s=0.1,
    )


def bench_writer(
    directory: Path, exchanges: list[CapturedExchange], redact: Redact | None = None
) -> float:
    store = Store.open(directory / f"writer-{'redacted' if redact else 'plain'}.duckdb")
    metrics = SidecarMetrics(CollectorRegistry())
    writer = CaptureWriter(
        store,
        metrics,
        queue_size=len(exchanges) + 1,
        batch_size=4096,
        **({"redact": redact} if redact else {}),
    )
    writer.start()
    started = time.perf_counter()
    for exchange in exchanges:
        writer.submit(exchange)
    writer.close(timeout_s=600)
    elapsed = time.perf_counter() - started
    written = store.query("SELECT count(*) FROM requests")[0][0]
    dropped = sum(
        s.value for m in metrics.dropped.collect() for s in m.samples if s.name.endswith("_total")
    )
    if written != len(exchanges) or dropped:
        raise RuntimeError(f"writer lost rows: {written} written, {dropped} dropped")
    store.close()
    return len(exchanges) / elapsed


def bench_arrow_floor(directory: Path, exchanges: list[CapturedExchange]) -> float:
    store = Store.open(directory / "arrow.duckdb")
    table = rows_to_arrow([to_row(e, str) for e in exchanges])
    started = time.perf_counter()
    store.append("requests", table)
    elapsed = time.perf_counter() - started
    store.close()
    return len(exchanges) / elapsed


def bench_executemany(directory: Path, exchanges: list[CapturedExchange]) -> float:
    store = Store.open(directory / "many.duckdb")
    rows = [to_row(e, str) for e in exchanges]
    columns = list(rows[0])
    placeholders = ", ".join("to_timestamp(?)" if c == "started_at" else "?" for c in columns)
    sql = f"INSERT INTO requests ({', '.join(columns)}) VALUES ({placeholders})"
    cur = store.cursor()
    started = time.perf_counter()
    cur.executemany(sql, [[row[c] for c in columns] for row in rows])
    elapsed = time.perf_counter() - started
    store.close()
    return len(exchanges) / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--executemany-rows", type=int, default=2_000)
    args = parser.parse_args()
    exchanges = [make_exchange(i) for i in range(args.rows)]
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        many = bench_executemany(directory, exchanges[: args.executemany_rows])
        floor = bench_arrow_floor(directory, exchanges)
        writer = bench_writer(directory, exchanges)
        # What `serve` runs by default: every built-in detector on every stored text.
        redacted = bench_writer(directory, exchanges, PatternRedactor([], detectors=DETECTORS))
    print(
        f"rows: {args.rows:,} (~{len(exchanges[0].request_body) + len(exchanges[0].response_body)} bytes of JSON each)"
    )
    print(f"  capture writer (parse + batch + Arrow append): {writer:>10,.0f} rows/s")
    print(f"  capture writer with the default redaction:     {redacted:>10,.0f} rows/s")
    print(f"  Arrow INSERT of pre-built rows (DuckDB floor): {floor:>10,.0f} rows/s")
    print(
        f"  executemany row by row ({args.executemany_rows:,} rows):        {many:>10,.0f} rows/s"
    )
    print(
        f"ratio writer / executemany: {writer / many:.1f}x; writer / Arrow floor: {writer / floor:.2f}"
    )
    print(f"target >= 50,000 rows/s: {'met' if writer >= 50_000 else 'NOT met'}")


if __name__ == "__main__":
    main()
