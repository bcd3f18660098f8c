"""The capture writer: batches land in DuckDB, failures are retried, every loss is counted."""

import time

import pytest
from prometheus_client import CollectorRegistry

from monitor.capture import CapturedExchange
from monitor.faults import Faults
from monitor.metrics import SidecarMetrics
from monitor.store import Store, StoreCorruptError
from monitor.writer import CaptureWriter, exchange_bytes


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


def big_exchange(i: int, size: int) -> CapturedExchange:
    big = exchange(i)
    big.request_body = b'{"messages":[{"role":"user","content":"' + b"x" * size + b'"}]}'
    return big


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
    for i in range(5):
        writer.submit(exchange(i))
    assert sample(metrics, "driftloop_capture_dropped_total", reason="queue_full") == 2
    assert sample(metrics, "driftloop_capture_queue_depth") == 3


def test_buffer_is_bounded_in_bytes(metrics):
    one = exchange_bytes(big_exchange(0, 100_000))
    writer = CaptureWriter(Store.open(":memory:"), metrics, max_buffer_bytes=3 * one)
    for i in range(5):  # not started: the buffer only fills
        writer.submit(big_exchange(i, 100_000))
    assert sample(metrics, "driftloop_capture_dropped_total", reason="buffer_full") == 2
    assert sample(metrics, "driftloop_capture_buffer_bytes") == 3 * one


def test_batches_are_capped_in_bytes(tmp_path, metrics):
    store = Store.open(tmp_path / "d.duckdb")
    one = exchange_bytes(big_exchange(0, 50_000))
    writer = CaptureWriter(store, metrics, max_batch_bytes=2 * one, flush_interval_s=60)
    for i in range(6):
        writer.submit(big_exchange(i, 50_000))
    writer.start()
    writer.close()
    assert store.query("SELECT count(*) FROM requests")[0][0] == 6
    assert sample(metrics, "driftloop_capture_flush_duration_seconds_count") == 3  # 2 per append
    assert sample(metrics, "driftloop_capture_buffer_bytes") == 0


def test_store_unavailable_drops_and_counts(metrics):
    writer = CaptureWriter(None, metrics)
    writer.submit(exchange(1))
    assert sample(metrics, "driftloop_capture_dropped_total", reason="store_unavailable") == 1
    assert sample(metrics, "driftloop_capture_writer_up") == 0


def test_failed_writes_are_kept_and_retried(tmp_path, metrics):
    faults = Faults()
    store = Store.open(tmp_path / "d.duckdb", faults=faults)
    writer = CaptureWriter(store, metrics, batch_size=1, flush_interval_s=0.01, retry_max_s=0.05)
    writer.start()
    faults.arm("store.append", "raise")
    writer.submit(exchange(1))
    assert wait_for(lambda: sample(metrics, "driftloop_capture_write_failures_total") >= 2)
    assert writer.status() == (
        "degraded",
        f"writes to {store.path} fail: injected fault at store.append",
    )
    assert sample(metrics, "driftloop_capture_writer_up") == 0
    faults.release("store.append")
    assert writer.flush()
    assert writer.status() == ("ok", None)
    writer.close()
    assert store.query("SELECT request_id FROM requests") == [("r1",)]
    assert sample(metrics, "driftloop_capture_dropped_total", reason="write_error") == 0


def test_a_write_error_that_never_heals_is_counted_at_shutdown(tmp_path, metrics):
    store = Store.open(tmp_path / "d.duckdb")
    writer = CaptureWriter(store, metrics, batch_size=1, flush_interval_s=0.01)
    writer.start()
    store.query("DROP TABLE requests")  # every append now fails inside DuckDB
    writer.submit(exchange(1))
    assert not writer.flush()
    assert "requests" in (writer.problem or "")
    writer.close()
    assert sample(metrics, "driftloop_capture_dropped_total", reason="write_error") == 1


def test_a_store_that_failed_at_start_is_opened_later(tmp_path, metrics):
    blocker = tmp_path / "not-yet-a-dir"
    blocker.write_text("")
    path = blocker / "d.duckdb"
    writer = CaptureWriter(
        None, metrics, opener=lambda: Store.open(path), flush_interval_s=0.01, retry_max_s=0.05
    )
    writer.start()
    writer.submit(exchange(1))
    assert not writer.flush() and str(blocker) in (writer.problem or "")
    blocker.unlink()  # the fault goes away: the next retry opens the store
    assert wait_for(writer.flush)
    assert sample(metrics, "driftloop_capture_store_reopens_total") == 1
    writer.close()  # closes the store it opened
    assert Store.open(path).query("SELECT request_id FROM requests") == [("r1",)]


def test_a_deleted_file_is_noticed_and_reopened(tmp_path, metrics):
    path = tmp_path / "d.duckdb"
    store = Store.open(path)
    writer = CaptureWriter(store, metrics, flush_interval_s=0.01)
    writer.start()
    writer.submit(exchange(1))
    assert writer.flush()
    path.unlink()
    writer.submit(exchange(2))
    assert writer.flush()
    assert sample(metrics, "driftloop_capture_store_reopens_total") == 1
    assert store.query("SELECT request_id FROM requests") == [("r2",)]  # the new file
    writer.close()


def test_a_corrupt_store_stops_the_retries_and_drops_what_waits(tmp_path, metrics):
    def opener() -> Store:
        raise StoreCorruptError(f"DuckDB file {tmp_path / 'x.duckdb'} is corrupt")

    writer = CaptureWriter(None, metrics, opener=opener, flush_interval_s=0.01)
    writer.submit(exchange(1))
    writer.start()
    assert not writer.flush()
    assert sample(metrics, "driftloop_capture_dropped_total", reason="store_unavailable") == 1
    writer.submit(exchange(2))  # no retry is coming: dropped at once
    assert sample(metrics, "driftloop_capture_dropped_total", reason="store_unavailable") == 2
    assert writer.status()[0] == "degraded" and "corrupt" in (writer.problem or "")
    writer.close()


def test_killed_writer_is_restarted_and_keeps_the_rows(tmp_path, metrics):
    store = Store.open(tmp_path / "d.duckdb")
    writer = CaptureWriter(store, metrics, batch_size=1000, flush_interval_s=0.05)
    for i in range(5):
        writer.submit(exchange(i))
    writer.faults.arm("writer.loop", "exit", count=1)
    writer.start()  # dies at its first pass, before writing anything
    assert wait_for(lambda: sample(metrics, "driftloop_capture_writer_up") == 0)
    writer.submit(exchange(99))  # finds the writer dead: restarts it, and this row is kept
    assert sample(metrics, "driftloop_capture_writer_restarts_total") == 1
    writer.close()
    assert store.query("SELECT count(*) FROM requests")[0][0] == 6
    assert sample(metrics, "driftloop_capture_dropped_total", reason="writer_dead") == 0


def test_started_at_keeps_microseconds(tmp_path, metrics):
    store = Store.open(tmp_path / "d.duckdb")
    writer = CaptureWriter(store, metrics)
    writer.start()
    writer.submit(exchange(0))
    writer.close()
    [(epoch,)] = store.query("SELECT epoch_us(started_at) FROM requests")
    assert epoch == 1_700_000_000_123_456


def test_a_fatal_duckdb_error_reopens_the_store_without_duplicating_rows(tmp_path, metrics):
    # A 64 MiB limit makes DuckDB's autocheckpoint fail after a durable commit: the database is
    # invalidated until reopened, and the committed batch must not be written twice.
    store = Store.open(tmp_path / "d.duckdb", memory_limit_bytes=64 * 2**20, threads=2)
    writer = CaptureWriter(store, metrics, flush_interval_s=0.05, max_buffer_bytes=2**30)
    writer.start()
    for i in range(40):
        writer.submit(big_exchange(i, 3_000_000))
    writer.flush(120)
    writer.close()
    assert sample(metrics, "driftloop_capture_store_reopens_total") >= 1
    written = sample(metrics, "driftloop_capture_rows_written_total")
    lost = sample(metrics, "driftloop_capture_dropped_total", reason="write_error")
    assert store.query("SELECT count(DISTINCT request_id), count(*) FROM requests") == [
        (written, written)
    ]
    assert written + lost == 40  # nothing lost silently
