"""Rows built in a child process: the same rows as in the writer thread, and nothing lost when
the child dies, hangs or cannot convert an exchange."""

from __future__ import annotations

import os
import signal

import pytest
from prometheus_client import CollectorRegistry

from monitor.metrics import SidecarMetrics
from monitor.redaction import PatternRedactor
from monitor.row_builder import RowBuilder, RowBuilderError, convert
from monitor.store import Store
from monitor.writer import CaptureWriter
from tests.monitor.test_writer import exchange, sample

REDACT = PatternRedactor([r"secret-\d+"], detectors=["secrets", "emails"])


class FailsOnPoison:
    """A redactor that raises for one text: an exchange that cannot become a row."""

    def __call__(self, text: str) -> str:
        if "poison" in text:
            raise ValueError("this text is poison")
        return text


def stream_exchange(i: int):
    streamed = exchange(i)
    streamed.stream = True
    streamed.request_body = b'{"messages":[{"role":"user","content":"mail a@b.co secret-7"}]}'
    streamed.response_body = (
        b'data: {"id":"c1","choices":[{"index":0,"delta":{"content":"he"}}]}\n\n'
        b'data: {"id":"c1","choices":[{"index":0,"delta":{"content":"llo"},'
        b'"finish_reason":"stop"}]}\n\ndata: [DONE]\n\n'
    )
    return streamed


def test_the_child_builds_exactly_the_rows_the_writer_thread_would():
    batch = [exchange(i) for i in range(5)] + [stream_exchange(i) for i in range(5, 10)]
    builder = RowBuilder(REDACT)
    try:
        table, failed = builder.build(batch)
    finally:
        builder.close()
    expected, _ = convert(batch, REDACT)
    assert failed == []
    assert table.equals(expected)
    assert table.column("prompt_text")[5].as_py() == "mail [REDACTED] [REDACTED]"
    assert table.column("response_text")[5].as_py() == "hello"


def test_an_exchange_that_cannot_be_a_row_is_named_and_the_rest_are_built():
    batch = [exchange(i) for i in range(3)]
    batch[1].request_body = b'{"messages":[{"role":"user","content":"poison"}]}'
    builder = RowBuilder(FailsOnPoison())
    try:
        table, failed = builder.build(batch)
    finally:
        builder.close()
    assert [index for index, _ in failed] == [1]
    assert "poison" in failed[0][1]
    assert table.column("request_id").to_pylist() == ["r0", "r2"]


def test_a_killed_child_costs_no_rows_and_is_replaced(tmp_path):
    metrics = SidecarMetrics(CollectorRegistry())
    store = Store.open(tmp_path / "d.duckdb")
    writer = CaptureWriter(store, metrics, batch_size=1000, flush_interval_s=60, rows_in_child=True)
    writer.start()
    first = writer.row_builder.pid  # the child started with the writer
    assert first is not None
    for i in range(10):
        writer.submit(exchange(i))
    assert writer.flush()
    os.kill(first, signal.SIGKILL)
    for i in range(10, 20):  # the dead child's batch: converted in the writer thread
        writer.submit(exchange(i))
    assert writer.flush()
    assert sample(metrics, "driftloop_capture_row_builder_failures_total") == 1
    for i in range(20, 30):  # a new child
        writer.submit(exchange(i))
    assert writer.flush()
    second = writer.row_builder.pid
    writer.close()
    assert store.query("SELECT count(*), count(DISTINCT request_id) FROM requests")[0] == (30, 30)
    assert second not in (None, first)
    assert sample(metrics, "driftloop_capture_row_builder_failures_total") == 1
    assert sample(metrics, "driftloop_capture_dropped_total", reason="capture_error") == 0


def test_a_hung_child_is_killed_at_its_timeout_and_the_next_batch_gets_a_new_one():
    builder = RowBuilder(REDACT, timeout_s=0.5)
    builder.start()
    pid = builder.pid
    os.kill(pid, signal.SIGSTOP)  # alive, never answers
    try:
        with pytest.raises(RowBuilderError, match="did not answer in time"):
            builder.build([exchange(0)])
        assert builder.pid is None  # killed; the next batch starts another
        table, failed = builder.build([exchange(1)])
        assert (table.num_rows, failed, builder.pid != pid) == (1, [], True)
    finally:
        builder.close()


def test_a_child_that_does_not_start_in_time_is_reported_and_killed():
    builder = RowBuilder(REDACT, startup_timeout_s=0.001)  # no interpreter imports that fast
    with pytest.raises(RowBuilderError, match="did not start"):
        builder.build([exchange(0)])
    assert builder.pid is None
    builder.close()
