"""An upstream that dies, closes or stalls mid-answer: the client sees it broken, as it would directly.

Issue 12 item 6. The stub's ``x-stub-fault`` knob breaks a stream after some events, or a whole
JSON answer half-way through its chunked body; the openai SDK is the client, and the same request
is first sent to the stub directly to show what the client would have seen without the sidecar.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest

from benchmarks.upstream_stub import running_stub

MESSAGES = [{"role": "user", "content": "hello"}]
CLOSE = {"x-stub-fault": "close", "x-stub-fault-after": "3"}
STALL = {"x-stub-fault": "stall", "x-stub-fault-after": "3"}
BROKEN = (httpx.HTTPError, openai.APIError)


@pytest.fixture(scope="module")
def stub_url() -> Iterator[str]:
    with running_stub() as port:
        yield f"http://127.0.0.1:{port}"


def client(url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=url + "/v1", api_key="x", max_retries=0, timeout=30)


def read_stream(url: str, headers: dict[str, str]) -> str:
    stream = client(url).chat.completions.create(
        model="m", messages=MESSAGES, stream=True, extra_headers=headers
    )
    return "".join(c.choices[0].delta.content or "" for c in stream if c.choices)


def broken(sidecar: Any, route: str = "chat_completions") -> float:
    return float(sidecar.metric("driftloop_proxy_broken_responses_total", route=route))


def test_stream_the_upstream_drops_raises_in_the_sdk_and_is_captured(start_sidecar, stub_url):
    with pytest.raises(BROKEN):  # what the client sees without the sidecar
        read_stream(stub_url, CLOSE)
    sidecar = start_sidecar(stub_url)
    with pytest.raises(BROKEN):
        read_stream(sidecar.url, CLOSE)
    assert broken(sidecar) == 1
    assert sidecar.metric("driftloop_proxy_upstream_errors_total", kind="protocol_error") == 1
    sidecar.flush()
    [(status, error, text)] = sidecar.rows("SELECT status_code, error, response_text FROM requests")
    assert status == 200 and error.startswith("upstream broke mid-stream")
    assert text == "The quick brown"  # the three events that did arrive


def test_stream_that_stalls_is_aborted_after_the_idle_limit(start_sidecar, stub_url):
    sidecar = start_sidecar(stub_url, sidecar={"idle_timeout_s": 0.5})
    with pytest.raises(BROKEN):
        read_stream(sidecar.url, STALL)
    assert broken(sidecar) == 1
    assert sidecar.metric("driftloop_proxy_upstream_errors_total", kind="timeout") == 1
    sidecar.flush()
    [(error,)] = sidecar.rows("SELECT error FROM requests")
    assert "sidecar.idle_timeout_s" in error


@pytest.mark.parametrize("fault", [CLOSE, STALL], ids=["close", "stall"])
def test_whole_answer_broken_mid_body_becomes_a_clean_upstream_error(
    start_sidecar, stub_url, fault
):
    if fault is CLOSE:
        with pytest.raises(BROKEN):  # direct: a truncated chunked body
            client(stub_url).chat.completions.create(
                model="m", messages=MESSAGES, extra_headers=fault
            )
    sidecar = start_sidecar(stub_url, sidecar={"idle_timeout_s": 0.5})
    with pytest.raises(openai.InternalServerError) as caught:
        client(sidecar.url).chat.completions.create(
            model="m", messages=MESSAGES, extra_headers=fault
        )
    kind = "timeout" if fault is STALL else "protocol_error"
    assert caught.value.status_code == (504 if fault is STALL else 502)
    assert caught.value.body["code"] == kind and "broke mid-response" in caught.value.message
    assert broken(sidecar) == 1
    assert sidecar.metric("driftloop_proxy_upstream_errors_total", kind=kind) == 1
    sidecar.flush()
    [(status, error)] = sidecar.rows("SELECT status_code, error FROM requests")
    assert status == caught.value.status_code and "broke mid-response" in error


def test_healthy_stream_longer_than_both_limits_is_not_cut(start_sidecar, stub_url):
    # 20 events 100 ms apart: 2 s in all, longer than the first-byte and idle limits together.
    sidecar = start_sidecar(stub_url, sidecar={"first_byte_timeout_s": 1, "idle_timeout_s": 1})
    text = read_stream(sidecar.url, {"x-stub-chunk-delay-ms": "100"})
    assert text.startswith("The quick") and text.endswith("morning light")
    assert broken(sidecar) == 0
    sidecar.flush()
    assert sidecar.rows("SELECT error, completion_tokens FROM requests") == [(None, 20)]


def test_upstream_slow_to_answer_is_a_504_after_the_first_byte_limit(start_sidecar, stub_url):
    sidecar = start_sidecar(stub_url, sidecar={"first_byte_timeout_s": 0.3})
    with pytest.raises(openai.InternalServerError) as caught:
        client(sidecar.url).chat.completions.create(
            model="m", messages=MESSAGES, extra_headers={"x-stub-first-byte-delay-ms": "5000"}
        )
    assert caught.value.status_code == 504
    assert "sidecar.first_byte_timeout_s" in caught.value.message
    assert sidecar.metric("driftloop_proxy_upstream_errors_total", kind="timeout") == 1
    assert broken(sidecar) == 0
