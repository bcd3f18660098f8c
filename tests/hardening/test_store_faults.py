"""Store faults under the real service: the client's request succeeds, /healthz names the fault,
its counter moves, and after recovery the rows are there (or their loss is counted).

The service runs on 127.0.0.1 in front of the stub upstream, with the openai SDK as the client;
the faults are real (a deleted file, a corrupted block, a file-size limit standing in for a full
disk, a path that cannot be created) except where a DuckDB write must fail on demand, which uses
the store's ``store.append`` fault point.
"""

from __future__ import annotations

import resource
import subprocess
import sys
from pathlib import Path

import httpx
import openai
import pytest

from benchmarks.upstream_stub import running_stub
from monitor.store import CREATING_SUFFIX, Store
from tests.hardening.api_running import running_api
from tests.hardening.serve_process import serve_process, wait_until
from tests.monitor.test_store import corrupt

FAST = {"flush_interval_s": 0.05}


@pytest.fixture(scope="module")
def stub_url():
    with running_stub() as port:
        yield f"http://127.0.0.1:{port}"


def chat(url: str, text: str = "hello") -> str:
    client = openai.OpenAI(base_url=url + "/v1", api_key="x", max_retries=0)
    reply = client.chat.completions.create(
        model="m",
        messages=[{"role": "user", "content": text}],
        extra_headers={"x-driftloop-capture": "force"},
    )
    return reply.choices[0].message.content or ""


def health(url: str) -> dict:
    return dict(httpx.get(url + "/healthz", timeout=5).json())


def test_a_deleted_db_file_is_noticed_and_reopened(start_sidecar, stub_url, tmp_path):
    db = tmp_path / "capture.duckdb"
    sidecar = start_sidecar(stub_url, capture={**FAST, "db_path": str(db)})
    assert chat(sidecar.url, "before")
    sidecar.flush()
    db.unlink()
    db.mkdir()  # and something else takes the path, so the first reopen fails
    assert chat(sidecar.url, "while deleted")
    wait_until(lambda: health(sidecar.url)["capture"] == "degraded", "healthz to degrade")
    assert "was deleted or replaced" in health(sidecar.url)["capture_error"]
    assert sidecar.metric("driftloop_capture_writer_up") == 0
    db.rmdir()
    wait_until(lambda: health(sidecar.url)["capture"] == "ok", "capture to recover")
    sidecar.flush()
    assert sidecar.metric("driftloop_capture_store_reopens_total") == 1
    # The row acknowledged while the file was gone is in the new file, not lost with the old.
    assert sidecar.rows("SELECT prompt_text FROM requests") == [("while deleted",)]
    assert sidecar.metric("driftloop_capture_dropped_total", reason="write_error") == 0


def test_failing_flushes_degrade_health_and_are_retried(start_sidecar, stub_url):
    sidecar = start_sidecar(stub_url, capture=FAST)
    faults = sidecar.parts.sidecar.writer.faults
    faults.arm("store.append", "raise")
    assert all(chat(sidecar.url, f"q{i}") for i in range(3))
    wait_until(
        lambda: sidecar.metric("driftloop_capture_write_failures_total") >= 1, "a failed write"
    )
    status = health(sidecar.url)
    assert status["capture"] == "degraded" and "fail" in status["capture_error"]
    assert sidecar.metric("driftloop_capture_writer_up") == 0
    faults.release("store.append")
    sidecar.flush()
    assert health(sidecar.url)["capture"] == "ok"
    assert sidecar.rows("SELECT count(*) FROM requests") == [(3,)]
    assert sidecar.metric("driftloop_capture_dropped_total", reason="write_error") == 0


def test_a_store_that_failed_at_start_is_retried(start_sidecar, stub_url, tmp_path):
    blocker = tmp_path / "mount-not-there-yet"
    blocker.write_text("")
    db = blocker / "capture.duckdb"
    sidecar = start_sidecar(stub_url, capture={**FAST, "db_path": str(db)})
    assert chat(sidecar.url, "early")
    status = health(sidecar.url)
    assert status["capture"] == "degraded" and str(blocker) in status["capture_error"]
    blocker.unlink()
    wait_until(lambda: health(sidecar.url)["capture"] == "ok", "the store to open late")
    sidecar.flush()
    assert sidecar.metric("driftloop_capture_store_reopens_total") == 1
    writer_store = sidecar.parts.sidecar.writer.store
    assert writer_store is not None
    assert writer_store.query("SELECT prompt_text FROM requests") == [("early",)]


def test_a_mangled_file_refuses_capture_and_keeps_serving(start_sidecar, stub_url, tmp_path):
    db = tmp_path / "capture.duckdb"
    corrupt(db)
    sidecar = start_sidecar(stub_url, capture={"db_path": str(db)})
    assert chat(sidecar.url)
    status = health(sidecar.url)
    assert status["capture"] == "degraded"
    assert f"DuckDB file {db} is corrupt" in status["capture_error"]
    assert sidecar.metric("driftloop_capture_dropped_total", reason="store_unavailable") == 1
    with running_api(tmp_path / "api", capture={"db_path": str(db)}) as api:
        reply = httpx.get(api.url + "/api/v1/status", headers=api.auth)
    assert reply.status_code == 200, reply.text  # not a 500 from a later query
    assert reply.json()["sidecar"]["capture"] == "degraded"


def _no_file_writes() -> None:
    # RLIMIT_FSIZE 0: every write to a regular file fails with EFBIG, as on a full disk.
    resource.setrlimit(resource.RLIMIT_FSIZE, (0, resource.RLIM_INFINITY))


def test_a_failed_open_on_a_full_disk_leaves_nothing_behind(stub_url, tmp_path):
    db = tmp_path / "capture.duckdb"
    with serve_process(tmp_path, stub_url, preexec_fn=_no_file_writes, capture=FAST) as service:
        assert chat(service.url)
        status = service.health()
        assert status["capture"] == "degraded" and "File too large" in status["capture_error"]
    assert not db.exists() and not Path(str(db) + CREATING_SUFFIX).exists()
    with serve_process(tmp_path, stub_url, capture=FAST) as service:  # the disk has room again
        assert service.health()["capture"] == "ok"
        assert chat(service.url)
    assert Store.open(db).query("SELECT count(*) FROM requests") == [(1,)]


def test_an_empty_file_from_a_crashed_open_is_cleaned_up_at_the_next_start(stub_url, tmp_path):
    db = tmp_path / "capture.duckdb"
    crashed = subprocess.run(
        [sys.executable, "-c", f"from monitor.store import Store; Store.open({str(db)!r})"],
        env={"DRIFTLOOP_FAILPOINT": "store-open-failed", "PATH": "/usr/bin:/bin"},
        cwd=Path(__file__).resolve().parents[2],
        preexec_fn=_no_file_writes,
        capture_output=True,
        timeout=60,
    )
    assert crashed.returncode == -9, crashed.stderr  # killed between the failure and cleanup
    assert db.stat().st_size == 0 and Path(str(db) + CREATING_SUFFIX).exists()
    with serve_process(tmp_path, stub_url, capture=FAST) as service:
        assert service.health()["capture"] == "ok"  # the leftover was provably ours: removed
        assert chat(service.url)
        wait_until(lambda: service.metric("driftloop_capture_rows_written_total") == 1, "the row")
