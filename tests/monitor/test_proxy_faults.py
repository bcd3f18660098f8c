"""Faults around the sidecar: each leaves the client's request intact and moves its counter.

The upstream is the benchmark's stub (a real HTTP server on 127.0.0.1), because these tests need
answers on demand (429s, slow streams) rather than a model.
"""

from __future__ import annotations

import threading
import time

import httpx
import openai
import pytest

from benchmarks.upstream_stub import running_stub
from driftloop.vllm_process import free_port

MESSAGES = [{"role": "user", "content": "hello"}]
FORCE = {"x-driftloop-capture": "force"}


@pytest.fixture(scope="module")
def stub_url():
    with running_stub() as port:
        yield f"http://127.0.0.1:{port}"


def client(url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0, timeout=30)


def chat(url: str, **kwargs):
    return client(url).chat.completions.create(model="stub", messages=MESSAGES, **kwargs)


def test_upstream_down_gives_502_with_openai_error_body(start_sidecar):
    sidecar = start_sidecar(f"http://127.0.0.1:{free_port()}")  # nothing listens there
    with pytest.raises(openai.InternalServerError) as caught:
        chat(sidecar.url, extra_headers=FORCE)
    assert caught.value.status_code == 502
    error = caught.value.body
    assert error["type"] == "upstream_error" and error["code"] == "unreachable"
    assert "unreachable" in error["message"]
    assert sidecar.metric("driftloop_proxy_upstream_errors_total", kind="unreachable") == 1
    sidecar.flush()
    [(status, message)] = sidecar.rows("SELECT status_code, error FROM requests")
    assert status == 502 and message.startswith("upstream: ")


def test_upstream_429_passes_through_verbatim(start_sidecar, stub_url):
    sidecar = start_sidecar(stub_url)
    headers = {"x-stub-status": "429"}
    direct = httpx.post(stub_url + "/v1/chat/completions", json={"model": "m"}, headers=headers)
    proxied = httpx.post(sidecar.url + "/v1/chat/completions", json={"model": "m"}, headers=headers)
    assert proxied.status_code == direct.status_code == 429
    assert proxied.content == direct.content
    with pytest.raises(openai.RateLimitError):
        chat(sidecar.url, extra_headers=headers)
    assert (
        sidecar.metric(
            "driftloop_proxy_requests_total", route="chat_completions", status_class="4xx"
        )
        == 2
    )


def test_queue_full_drops_captures_not_requests(start_sidecar, stub_url):
    sidecar = start_sidecar(stub_url, capture={"queue_size": 2, "batch_size": 1})
    faults = sidecar.parts.sidecar.writer.faults
    faults.arm("store.append", "stall")  # the writer blocks on its first append
    replies = [chat(sidecar.url)]
    assert faults.stalled.wait(5), "the writer never reached its first append"
    replies += [chat(sidecar.url) for _ in range(5)]  # the queue fills behind the stalled one
    faults.release("store.append")
    assert all(r.choices[0].message.content for r in replies)
    sidecar.flush()
    dropped = sidecar.metric("driftloop_capture_dropped_total", reason="queue_full")
    written = sidecar.rows("SELECT count(*) FROM requests")[0][0]
    assert dropped == 3 and written == 3  # one in the writer's hands, two queued, three dropped


def test_unwritable_db_path_serves_traffic_and_counts_losses(start_sidecar, stub_url, tmp_path):
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    sidecar = start_sidecar(stub_url, capture={"db_path": str(blocker / "x.duckdb")})
    assert sidecar.parts.store is None
    assert chat(sidecar.url).choices[0].message.content
    # Kept in the byte-bounded buffer while the writer retries opening the store.
    assert sidecar.metric("driftloop_capture_enqueued_total") == 1
    health = httpx.get(sidecar.url + "/healthz").json()
    assert health["capture"] == "degraded" and str(blocker) in health["capture_error"]
    assert sidecar.metric("driftloop_capture_writer_up") == 0


def test_killed_writer_keeps_traffic_flowing_and_is_restarted(start_sidecar, stub_url):
    sidecar = start_sidecar(stub_url, capture={"flush_interval_s": 0.05})
    sidecar.parts.sidecar.writer.faults.arm("writer.loop", "exit", count=1)  # the thread dies
    deadline = time.monotonic() + 5
    while sidecar.metric("driftloop_capture_writer_up") and time.monotonic() < deadline:
        time.sleep(0.01)
    assert httpx.get(sidecar.url + "/healthz").json()["capture"] == "degraded"
    replies = [chat(sidecar.url) for _ in range(5)]
    assert len(replies) == 5
    assert sidecar.metric("driftloop_capture_writer_restarts_total") == 1
    sidecar.flush()
    assert sidecar.rows("SELECT count(*) FROM requests")[0][0] == 5


def test_client_disconnect_mid_stream_is_counted(start_sidecar, stub_url):
    sidecar = start_sidecar(stub_url)
    with httpx.stream(
        "POST",
        sidecar.url + "/v1/chat/completions",
        json={"model": "m", "stream": True, "messages": MESSAGES},
        headers={**FORCE, "x-stub-chunk-delay-ms": "100"},
    ) as response:
        next(response.iter_bytes())  # first event, then hang up
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and not sidecar.metric(
        "driftloop_proxy_client_disconnects_total", route="chat_completions"
    ):
        time.sleep(0.02)
    assert sidecar.metric("driftloop_proxy_client_disconnects_total", route="chat_completions") == 1
    sidecar.flush()
    assert sidecar.rows("SELECT error FROM requests") == [("client_disconnected",)]


def test_sampling_and_skip_header(start_sidecar, stub_url):
    sidecar = start_sidecar(stub_url, capture={"sample_rate": 0.0, "sample_rates": {"hot": 1.0}})
    client(sidecar.url).chat.completions.create(model="cold", messages=MESSAGES)
    client(sidecar.url).chat.completions.create(model="hot", messages=MESSAGES)
    client(sidecar.url).chat.completions.create(
        model="hot", messages=MESSAGES, extra_headers={"x-driftloop-capture": "skip"}
    )
    client(sidecar.url).chat.completions.create(
        model="cold", messages=MESSAGES, extra_headers=FORCE
    )
    sidecar.flush()
    assert sidecar.rows("SELECT model_alias FROM requests ORDER BY started_at") == [
        ("hot",),
        ("cold",),
    ]
    decisions = {
        d: sidecar.metric("driftloop_capture_decisions_total", model="hot", decision=d)
        for d in ("sampled_in", "skipped")
    }
    assert decisions == {"sampled_in": 1, "skipped": 1}
    # "cold" is not a configured model, so its label is bounded to "other".
    assert (
        sidecar.metric("driftloop_capture_decisions_total", model="other", decision="forced") == 1
    )


def test_many_concurrent_streams_all_captured(start_sidecar, stub_url):
    sidecar = start_sidecar(stub_url)
    results: list[str] = []

    def run() -> None:
        stream = chat(sidecar.url, stream=True)
        results.append("".join(c.choices[0].delta.content or "" for c in stream if c.choices))

    threads = [threading.Thread(target=run) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert len(results) == 16 and len(set(results)) == 1
    sidecar.flush()
    texts = sidecar.rows("SELECT DISTINCT response_text, completion_tokens FROM requests")
    assert texts == [(results[0], 20)]


def test_a_configured_session_header_decides_the_session_key(start_sidecar, stub_url):
    """Through a real sidecar: one header value is one session, whatever the messages say."""
    sidecar = start_sidecar(stub_url, capture={"session_header": "X-Session-Id"})
    sdk = client(sidecar.url)
    for session, text in (("s-1", "hi"), ("s-1", "other opening"), ("s-2", "hi")):
        sdk.chat.completions.create(
            model="stub",
            messages=[{"role": "user", "content": text}],
            extra_headers={"x-session-id": session},
        )
    chat(sidecar.url)  # no header: keyed by its first user turn, as before
    sidecar.flush()
    keys = [k for (k,) in sidecar.rows("SELECT session_key FROM requests ORDER BY started_at")]
    assert keys[0] == keys[1] and keys[0].startswith("h:") and "s-1" not in keys[0]
    assert keys[2] != keys[0] and keys[2].startswith("h:")
    assert keys[3].startswith("c:")


def test_a_session_header_name_that_is_not_a_header_token_is_refused(tmp_path):
    from driftloop.config import load_config

    with pytest.raises(ValueError, match="session_header"):
        load_config(None, environ={"DRIFTLOOP__CAPTURE__SESSION_HEADER": "x session"})
