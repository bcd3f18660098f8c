"""Reference windows: initial reference from the first capture, pinned ranges, bad ranges."""

from datetime import UTC, datetime, timedelta

import pytest
from prometheus_client import CollectorRegistry

from monitor.capture import CapturedExchange
from monitor.metrics import SidecarMetrics
from monitor.references import active_reference, ensure_reference, set_reference, windows
from monitor.store import Store
from monitor.writer import CaptureWriter

T0 = datetime(2026, 11, 1, tzinfo=UTC)


@pytest.fixture
def store(tmp_path):
    store = Store.open(tmp_path / "d.duckdb")
    writer = CaptureWriter(store, SidecarMetrics(CollectorRegistry()))
    writer.start()
    for i in range(10):  # one exchange a minute
        writer.submit(
            CapturedExchange(
                request_id=f"r{i}",
                started_at=(T0 + timedelta(minutes=i)).timestamp(),
                route="completions",
                model_alias="m",
                served_model="m",
                stream=False,
                request_body=b'{"prompt": "p"}',
                status_code=200 if i != 5 else 500,
            )
        )
    writer.close()
    yield store
    store.close()


def test_initial_reference_holds_everything_from_the_first_capture(store):
    assert active_reference(store, "m") is None
    reference = ensure_reference(store, "m")
    assert reference.reason == "initial" and reference.starts_at <= T0
    assert ensure_reference(store, "m").id == reference.id  # not made twice
    assert ensure_reference(store, "nobody") is None


def test_windows_skip_failures_and_follow_the_reference(store):
    ref_rows, cur_rows = windows(
        store, ensure_reference(store, "m"), reference_size=3, window_size=4
    )
    assert [r["request_id"] for r in ref_rows] == ["r0", "r1", "r2"]
    assert [r["request_id"] for r in cur_rows] == ["r6", "r7", "r8", "r9"]  # latest 4; r5 failed


def test_pinned_range_replaces_the_reference(store):
    ensure_reference(store, "m")
    pinned = set_reference(
        store, "m", T0 + timedelta(minutes=2), ends_at=T0 + timedelta(minutes=4), reason="pinned"
    )
    assert active_reference(store, "m") == pinned
    ref_rows, cur_rows = windows(store, pinned, reference_size=100, window_size=2)
    assert [r["request_id"] for r in ref_rows] == ["r2", "r3"]
    assert [r["request_id"] for r in cur_rows] == ["r8", "r9"]


def test_a_range_that_ends_before_it_starts_is_refused(store):
    with pytest.raises(ValueError, match=r"ends .* before it starts"):
        set_reference(store, "m", T0, ends_at=T0 - timedelta(minutes=1), reason="pinned")


def test_a_request_written_after_the_reference_was_made_still_belongs_to_it(store):
    """Rows land when answers end: one that started first may be written after the reference."""
    reference = ensure_reference(store, "m")
    writer = CaptureWriter(store, SidecarMetrics(CollectorRegistry()))
    writer.start()
    writer.submit(
        CapturedExchange(
            request_id="early",
            started_at=(T0 - timedelta(seconds=1)).timestamp(),
            route="completions",
            model_alias="m",
            served_model="m",
            stream=False,
            request_body=b'{"prompt": "p"}',
            status_code=200,
        )
    )
    writer.close()
    ref_rows, cur_rows = windows(store, reference, reference_size=3, window_size=4)
    assert [r["request_id"] for r in ref_rows] == ["early", "r0", "r1"]
    assert [r["request_id"] for r in cur_rows] == ["r6", "r7", "r8", "r9"]
