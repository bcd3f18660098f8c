"""The sidecar in front of the real vLLM (SmolLM2-135M-Instruct), driven by the openai SDK."""

from __future__ import annotations

import json
import time

import httpx
import openai
import pytest

from tests.conftest import SERVED_NAME

pytestmark = [pytest.mark.vllm, pytest.mark.slow]

FORCE = {"x-driftloop-capture": "force"}
QUESTION = [{"role": "user", "content": "What is the capital of France?"}]


@pytest.fixture
def sidecar(vllm_server, start_sidecar):
    return start_sidecar(
        vllm_server.base_url, upstream_api_key=vllm_server.api_key, aliases={"support": SERVED_NAME}
    )


def direct_headers(vllm_server) -> dict[str, str]:
    """The session vLLM wants its key; clients of the sidecar never need it."""
    return {"Authorization": f"Bearer {vllm_server.api_key}"}


def client(url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0, timeout=120)


def captured(sidecar, columns: str = "*"):
    sidecar.flush()
    return sidecar.rows(f"SELECT {columns} FROM requests ORDER BY started_at")


def test_chat_non_streaming_row_matches_what_the_client_got(sidecar):
    reply = client(sidecar.url).chat.completions.create(
        model="support", messages=QUESTION, max_tokens=24, temperature=0, extra_headers=FORCE
    )
    assert "Paris" in reply.choices[0].message.content
    [row] = captured(
        sidecar,
        "model_alias, served_model, stream, prompt_text, response_text, finish_reason,"
        " prompt_tokens, completion_tokens, status_code, upstream_id",
    )
    assert row == (
        "support",
        SERVED_NAME,
        False,
        QUESTION[0]["content"],
        reply.choices[0].message.content,
        reply.choices[0].finish_reason,
        reply.usage.prompt_tokens,
        reply.usage.completion_tokens,
        200,
        reply.id,
    )


def test_chat_stream_usage_is_captured_but_not_shown_to_the_client(sidecar):
    stream = client(sidecar.url).chat.completions.create(
        model="support",
        messages=QUESTION,
        max_tokens=16,
        temperature=0,
        stream=True,
        extra_headers=FORCE,
    )
    chunks = list(stream)
    # The client did not ask for usage, so it sees no usage-only chunk even though the sidecar
    # asked upstream for one.
    assert all(chunk.choices for chunk in chunks)
    assert all(chunk.usage is None for chunk in chunks)
    text = "".join(c.choices[0].delta.content or "" for c in chunks)
    finish = next(c.choices[0].finish_reason for c in chunks if c.choices[0].finish_reason)
    [row] = captured(
        sidecar, "stream, response_text, finish_reason, prompt_tokens, completion_tokens"
    )
    assert row[:3] == (True, text, finish)
    assert row[3] > 0 and 0 < row[4] <= 16


def test_chat_stream_with_client_usage_passes_it_through(sidecar):
    stream = client(sidecar.url).chat.completions.create(
        model=SERVED_NAME,
        messages=QUESTION,
        max_tokens=8,
        stream=True,
        stream_options={"include_usage": True},
        extra_headers=FORCE,
    )
    chunks = list(stream)
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    [row] = captured(sidecar, "prompt_tokens, completion_tokens")
    assert row == (chunks[-1].usage.prompt_tokens, chunks[-1].usage.completion_tokens)


def test_completions_streaming_and_not(sidecar):
    api = client(sidecar.url)
    plain = api.completions.create(
        model=SERVED_NAME,
        prompt="The capital of France is",
        max_tokens=6,
        temperature=0,
        extra_headers=FORCE,
    )
    streamed = list(
        api.completions.create(
            model=SERVED_NAME,
            prompt="One, two, three,",
            max_tokens=6,
            temperature=0,
            stream=True,
            extra_headers=FORCE,
        )
    )
    rows = captured(
        sidecar, "route, stream, prompt_text, response_text, finish_reason, completion_tokens"
    )
    assert rows[0] == (
        "completions",
        False,
        "The capital of France is",
        plain.choices[0].text,
        plain.choices[0].finish_reason,
        plain.usage.completion_tokens,
    )
    assert rows[1][:4] == (
        "completions",
        True,
        "One, two, three,",
        "".join(c.choices[0].text for c in streamed),
    )
    assert rows[1][4] == "length" and rows[1][5] == 6


def _events(response: httpx.Response) -> list[dict | str]:
    """SSE events with the fields that differ per request (id, created) masked."""
    out: list[dict | str] = []
    for line in response.text.splitlines():
        if not line.startswith("data: "):
            continue
        data = line[6:]
        if data == "[DONE]":
            out.append(data)
            continue
        event = json.loads(data)
        event["id"], event["created"] = "<id>", 0
        out.append(event)
    return out


@pytest.mark.parametrize("include_usage", [False, True])
def test_stream_through_sidecar_is_identical_to_direct(sidecar, vllm_server, include_usage):
    body = {
        "model": SERVED_NAME,
        "messages": QUESTION,
        "max_tokens": 12,
        "temperature": 0,
        "stream": True,
        "seed": 7,
    }
    if include_usage:
        body["stream_options"] = {"include_usage": True}
    direct = httpx.post(
        vllm_server.base_url + "/v1/chat/completions",
        json=body,
        headers=direct_headers(vllm_server),
        timeout=120,
    )
    proxied = httpx.post(
        sidecar.url + "/v1/chat/completions", json=body, headers=FORCE, timeout=120
    )
    assert proxied.status_code == direct.status_code == 200
    assert proxied.headers["content-type"] == direct.headers["content-type"]
    assert _events(proxied) == _events(direct)
    assert len(_events(direct)) > 3


def test_upstream_4xx_passes_through_verbatim(sidecar, vllm_server):
    body = {"model": "no-such-model", "messages": QUESTION}
    direct = httpx.post(
        vllm_server.base_url + "/v1/chat/completions",
        json=body,
        headers=direct_headers(vllm_server),
        timeout=30,
    )
    proxied = httpx.post(sidecar.url + "/v1/chat/completions", json=body, headers=FORCE, timeout=30)
    assert direct.status_code == proxied.status_code == 404
    assert proxied.content == direct.content
    with pytest.raises(openai.NotFoundError):
        client(sidecar.url).chat.completions.create(model="no-such-model", messages=QUESTION)
    assert (
        sidecar.metric(
            "driftloop_proxy_requests_total", route="chat_completions", status_class="4xx"
        )
        == 2
    )
    assert [r[0] for r in captured(sidecar, "status_code")] == [404, 404]


def test_other_paths_pass_through(sidecar, vllm_server):
    models = client(sidecar.url).models.list()
    assert [m.id for m in models.data] == [SERVED_NAME]
    assert sidecar.metric("driftloop_proxy_requests_total", route="other", status_class="2xx") == 1


def _running_requests(vllm_url: str) -> float:
    text = httpx.get(vllm_url + "/metrics", timeout=10).text
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("vllm:num_requests_running{")
    )


def test_client_disconnect_mid_stream_cancels_upstream(sidecar, vllm_server):
    stream = client(sidecar.url).chat.completions.create(
        model=SERVED_NAME,
        max_tokens=900,
        temperature=1.0,
        stream=True,
        extra_headers=FORCE,
        messages=[{"role": "user", "content": "Write a very long story about a lighthouse."}],
    )
    for _, _chunk in zip(range(3), stream, strict=False):
        pass
    assert _running_requests(vllm_server.base_url) == 1
    stream.close()
    # 900 tokens at ~10 tokens/s would keep vLLM busy for a minute and a half if not cancelled.
    deadline = time.monotonic() + 20
    while _running_requests(vllm_server.base_url) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _running_requests(vllm_server.base_url) == 0
    assert sidecar.metric("driftloop_proxy_client_disconnects_total", route="chat_completions") == 1
    [row] = captured(sidecar, "error, completion_tokens")
    assert row == ("client_disconnected", None)
