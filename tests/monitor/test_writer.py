"""The capture writer: batches land in DuckDB, and every way of losing rows is counted."""

import ctypes
import threading
import time

import pytest
from prometheus_client import CollectorRegistry

from monitor.capture import CapturedExchange
from monitor.metrics import SidecarMetrics
from monitor.store import Store
from monitor.writer import CaptureWriter


def exchange(i: int) -> CapturedExchange:
    return CapturedExchange(
        request_id=f"r{i}",
        started_at=1_700_000_000.123456 + i,
        route="chat_completions",
        model_alias="m",
        served_model="m",
        stream=False,
        request_body=b'{"messages":[{"role":"user","content":"hi"}]}',
        status_code=200,
        response_body=b'{"choices":[{"message":{"content":"yo"},"finish_reason":"stop"}]}',
    )


@pytest.fixture
def metrics():
    return SidecarMetrics(CollectorRegistry())


def sample(metrics, name, **labels):
    return metrics.registry.get_sample_value(name, labels) or 0.0


def wait_for(predicate, timeout=5.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.01)
    return False


def test_rows_flush_by_size_and_close_flushes_the_rest(tmp_path, metrics):
    store = Store.open(tmp_path / "d.duckdb")
    writer = CaptureWriter(store, metrics, batch_size=10, flush_interval_s=60)
    writer.start()
    for i in range(25):
        writer.submit(exchange(i))
    # The 60 s interval never passes: only the batch size can have triggered these writes.
    assert wait_for(lambda: store.query("SELECT count(*) FROM requests")[0][0] >= 20)
    writer.close()
    assert store.query("SELECT count(*) FROM requests")[0][0] == 25
    assert sample(metrics, "driftloop_capture_rows_written_total") == 25
    assert store.query("SELECT response_text, finish_reason FROM requests LIMIT 1")[0] == (
        "yo",
        "stop",
    )


def test_rows_flush_by_interval(tmp_path, metrics):
    store = Store.open(tmp_path / "d.duckdb")
    writer = CaptureWriter(store, metrics, batch_size=1000, flush_interval_s=0.05)
    writer.start()
    writer.submit(exchange(1))
    assert wait_for(lambda: store.query("SELECT count(*) FROM requests")[0][0] == 1, timeout=2)
    writer.close()


def test_queue_full_drops_and_counts(metrics):
    writer = CaptureWriter(Store.open(":memory:"), metrics, queue_size=3)
    # Not started: nothing drains, so the fourth and fifth submissions find the queue full.
    writer._last_restart = float("inf")  # keep the dead-writer restart out of this test
    for i in range(5):
        writer.submit(exchange(i))
    assert sample(metrics, "driftloop_capture_dropped_total", reason="queue_full") == 2
    assert sample(metrics, "driftloop_capture_queue_depth") == 3


def test_store_unavailable_drops_and_counts(metrics):
    writer = CaptureWriter(None, metrics)
    writer.submit(exchange(1))
    assert sample(metrics, "driftloop_capture_dropped_total", reason="store_unavailable") == 1
    assert sample(metrics, "driftloop_capture_writer_up") == 0


def test_write_error_drops_the_batch_and_the_writer_lives_on(tmp_path, metrics):
    store = Store.open(tmp_path / "d.duckdb")
    writer = CaptureWriter(store, metrics, batch_size=1, flush_interval_s=0.01)
    writer.start()
    store.query("DROP TABLE requests")  # the next append fails inside DuckDB
    writer.submit(exchange(1))
    assert wait_for(
        lambda: sample(metrics, "driftloop_capture_dropped_total", reason="write_error") == 1
    )
    assert writer.healthy
    writer.close()


def _kill_thread(thread: threading.Thread) -> None:
    """Raise SystemExit inside ``thread``: the closest Python has to killing one thread."""
    ctypes.pythonapi.PyThreadState_SetAsyncExc(
        ctypes.c_ulong(thread.ident), ctypes.py_object(SystemExit)
    )


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_killed_writer_is_counted_and_restarted(tmp_path, metrics):
    store = Store.open(tmp_path / "d.duckdb")
    writer = CaptureWriter(store, metrics, batch_size=1000, flush_interval_s=0.2)
    writer.start()
    for i in range(5):
        writer.submit(exchange(i))
    thread = writer._thread
    _kill_thread(thread)
    thread.join(5)
    assert not thread.is_alive()
    assert sample(metrics, "driftloop_capture_writer_up") == 0
    lost = sample(metrics, "driftloop_capture_dropped_total", reason="writer_dead")
    writer.submit(exchange(99))  # finds the writer dead: restarts it, and this row is kept
    assert sample(metrics, "driftloop_capture_writer_restarts_total") == 1
    writer.close()
    written = store.query("SELECT count(*) FROM requests")[0][0]
    # Every submitted row is either written or counted as lost with the writer.
    assert written + lost == 6
    assert store.query("SELECT count(*) FROM requests WHERE request_id = 'r99'")[0][0] == 1


def test_started_at_keeps_microseconds(tmp_path, metrics):
    store = Store.open(tmp_path / "d.duckdb")
    writer = CaptureWriter(store, metrics)
    writer.start()
    writer.submit(exchange(0))
    writer.close()
    [(epoch,)] = store.query("SELECT epoch_us(started_at) FROM requests")
    assert epoch == 1_700_000_000_123_456
