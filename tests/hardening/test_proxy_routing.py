"""What reaches the upstream through the sidecar: paths, credentials, the capture header, bodies.

Issue 12 items 1 (admin paths, the upstream key), 3 (credentials in upstream_url), 5 (who may steer
capture) and 7 (bodies and paths that used to skip rewrite, capture and metrics). The upstream is
the benchmark stub; ``x-stub-echo`` makes it answer with exactly what it received.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest
from prometheus_client import CollectorRegistry

from benchmarks.upstream_stub import running_stub
from driftloop.api.server import ApiServer
from driftloop.service import api_token, build_components, control_api
from driftloop.vllm_process import free_port
from tests.conftest import make_config

ECHO = {"x-stub-echo": "1"}
MESSAGES = [{"role": "user", "content": "hello"}]
ADMIN_PATHS = [
    ("POST", "/v1/load_lora_adapter"),
    ("POST", "/v1/unload_lora_adapter"),
    ("POST", "/reset_prefix_cache"),
    ("POST", "/sleep"),
    ("POST", "/wake_up"),
    ("POST", "/collective_rpc"),
    ("POST", "/invocations"),
    ("GET", "/metrics/../v1/load_lora_adapter"),
]


@pytest.fixture(scope="module")
def stub_url() -> Iterator[str]:
    with running_stub() as port:
        yield f"http://127.0.0.1:{port}"


def echoed(response: httpx.Response) -> dict[str, Any]:
    assert response.status_code == 200, response.text
    seen: dict[str, Any] = response.json()
    return seen


def rejected(sidecar: Any, reason: str) -> float:
    return float(sidecar.metric("driftloop_proxy_rejected_total", reason=reason))


# -- item 1: admin paths and the upstream's key ----------------------------------------------


@pytest.mark.parametrize(("method", "path"), ADMIN_PATHS)
def test_admin_paths_are_answered_locally_and_counted(start_sidecar, stub_url, method, path):
    sidecar = start_sidecar(stub_url)
    reply = httpx.request(
        method, sidecar.url + path, json={"lora_name": "prod"}, headers=ECHO, timeout=10
    )
    assert reply.status_code == 404  # the echoing stub would have said 200
    error = reply.json()["error"]
    assert error["code"] == "path_not_allowed" and "sidecar.forward_paths" in error["message"]
    assert rejected(sidecar, "path_not_allowed") == 1
    assert sidecar.metric("driftloop_proxy_requests_total", route="other", status_class="2xx") == 0


def test_admin_path_through_the_openai_sdk_raises_not_found(start_sidecar, stub_url):
    sidecar = start_sidecar(stub_url)
    client = openai.OpenAI(base_url=sidecar.url, api_key="x", max_retries=0)
    with pytest.raises(openai.NotFoundError):
        client.post("/v1/load_lora_adapter", body={"lora_name": "a"}, cast_to=httpx.Response)


def test_forward_paths_is_configurable(start_sidecar, stub_url):
    sidecar = start_sidecar(stub_url, sidecar={"forward_paths": ["/v1/models", "/extra/*"]})
    assert httpx.get(sidecar.url + "/extra/a/b", headers=ECHO).status_code == 200
    assert httpx.get(sidecar.url + "/v1/models").status_code == 200
    assert httpx.post(sidecar.url + "/v1/chat/completions", json={}).status_code == 404


def test_upstream_api_key_replaces_the_clients_authorization(start_sidecar, stub_url):
    sidecar = start_sidecar(stub_url, upstream_api_key="only-driftloop-knows")
    client = openai.OpenAI(
        base_url=sidecar.url + "/v1", api_key="client-key", max_retries=0, default_headers=ECHO
    )
    seen = client.post("/models", cast_to=httpx.Response, body=None)
    headers = seen.json()["headers"]
    assert headers["authorization"] == "Bearer only-driftloop-knows"
    reply = httpx.post(sidecar.url + "/v1/completions", json={"model": "m"}, headers=ECHO)
    assert echoed(reply)["headers"]["authorization"] == "Bearer only-driftloop-knows"


def test_without_a_key_the_clients_authorization_passes(start_sidecar, stub_url):
    sidecar = start_sidecar(stub_url)
    reply = httpx.get(
        sidecar.url + "/v1/models", headers={**ECHO, "authorization": "Bearer client-key"}
    )
    assert echoed(reply)["headers"]["authorization"] == "Bearer client-key"


# -- item 3: credentials in upstream_url -----------------------------------------------------


def test_url_credentials_are_used_upstream_and_shown_nowhere(start_sidecar, stub_url, tmp_path):
    secret_url = stub_url.replace("http://", "http://admin:hunter2@")
    sidecar = start_sidecar(secret_url)
    reply = httpx.get(sidecar.url + "/v1/models", headers={**ECHO, "authorization": "Bearer c"})
    assert (
        echoed(reply)["headers"]["authorization"] == "Basic YWRtaW46aHVudGVyMg=="
    )  # admin:hunter2
    health = httpx.get(sidecar.url + "/healthz").text
    assert "hunter2" not in health and json.loads(health)["upstream"].startswith("http://***@")

    dead = start_sidecar(f"http://admin:hunter2@127.0.0.1:{free_port()}")
    with pytest.raises(openai.InternalServerError) as caught:
        openai.OpenAI(base_url=dead.url + "/v1", api_key="x", max_retries=0).models.list()
    assert caught.value.status_code == 502
    assert "hunter2" not in caught.value.response.text
    assert "***@" in caught.value.body["message"]


def test_control_api_status_never_shows_url_credentials(tmp_path, stub_url):
    cfg = make_config(tmp_path, judges={"enabled": False}, drift={"enabled": False})
    secret_url = stub_url.replace("http://", "http://admin:hunter2@")
    parts = build_components(cfg, secret_url, CollectorRegistry())
    try:
        with ApiServer(control_api(cfg, parts), "127.0.0.1", 0) as server:
            reply = httpx.get(
                server.url + "/api/v1/status",
                headers={"Authorization": f"Bearer {api_token(cfg)}"},
            )
    finally:
        parts.close()
    assert reply.status_code == 200
    assert "hunter2" not in reply.text
    assert reply.json()["sidecar"]["upstream"] == stub_url.replace("http://", "http://***@")


# -- item 5: x-driftloop-capture only from trusted networks ----------------------------------


def test_capture_header_is_stripped_on_every_path(start_sidecar, stub_url):
    sidecar = start_sidecar(stub_url)
    for path in ("/v1/chat/completions", "/v1/models", "/tokenize"):
        reply = httpx.post(
            sidecar.url + path, json={"model": "m"}, headers={**ECHO, "x-driftloop-capture": "skip"}
        )
        assert "x-driftloop-capture" not in echoed(reply)["headers"]


def _chat_from(url: str, local_address: str, header: str) -> None:
    transport = httpx.HTTPTransport(local_address=local_address)
    with httpx.Client(transport=transport, timeout=10) as http:
        client = openai.OpenAI(base_url=url + "/v1", api_key="x", max_retries=0, http_client=http)
        client.chat.completions.create(
            model="m", messages=MESSAGES, extra_headers={"x-driftloop-capture": header}
        )


def test_capture_header_counts_only_from_trusted_networks(start_sidecar, stub_url):
    # Only 127.0.0.2 is trusted; a client on 127.0.0.1 stands for any untrusted network.
    sidecar = start_sidecar(
        stub_url, capture={"sample_rate": 0.0, "trusted_networks": ["127.0.0.2/32"]}
    )
    _chat_from(sidecar.url, "127.0.0.1", "force")  # ignored: sampled out at rate 0
    _chat_from(sidecar.url, "127.0.0.2", "force")  # honoured
    sidecar.flush()
    assert sidecar.rows("SELECT count(*) FROM requests") == [(1,)]
    decisions = {
        d: sidecar.metric("driftloop_capture_decisions_total", model="other", decision=d)
        for d in ("forced", "sampled_out")
    }
    assert decisions == {"forced": 1, "sampled_out": 1}


def test_untrusted_skip_cannot_hide_traffic(start_sidecar, stub_url):
    sidecar = start_sidecar(stub_url, capture={"trusted_networks": []})
    _chat_from(sidecar.url, "127.0.0.1", "skip")
    sidecar.flush()
    assert sidecar.rows("SELECT count(*) FROM requests") == [(1,)]


# -- item 7: paths and bodies that used to skip rewrite, capture and metrics -----------------


@pytest.mark.parametrize(
    "raw_path",
    [
        "/v1/x/../chat/completions",
        "/v1/./chat/completions",
        "/v1/x/%2e%2e/chat/completions",
        "/v1/x/%2E%2E/chat/%63ompletions",
    ],
)
def test_dot_segment_paths_are_normalised_then_aliased_and_captured(
    start_sidecar, stub_url, raw_path
):
    sidecar = start_sidecar(stub_url, aliases={"support": "served-v1"})
    reply = _raw_request(sidecar.url, "POST", raw_path, {"model": "support"}, ECHO)
    seen = json.loads(reply.split(b"\r\n\r\n", 1)[1])
    assert seen["path"] == "/v1/chat/completions"
    assert json.loads(seen["body"])["model"] == "served-v1"
    sidecar.flush()
    assert sidecar.rows("SELECT route, model_alias, served_model FROM requests") == [
        ("chat_completions", "support", "served-v1")
    ]
    assert (
        sidecar.metric(
            "driftloop_proxy_requests_total", route="chat_completions", status_class="2xx"
        )
        == 1
    )


def test_options_asterisk_is_answered_locally_not_an_upstream_error(start_sidecar, stub_url):
    sidecar = start_sidecar(stub_url)
    reply = _raw_request(sidecar.url, "OPTIONS", "*", None, {})
    assert reply.startswith(b"HTTP/1.1 204 ")
    assert b"allow: " in reply.lower()
    assert rejected(sidecar, "asterisk_form") == 1
    for kind in ("unreachable", "timeout", "protocol_error"):
        assert sidecar.metric("driftloop_proxy_upstream_errors_total", kind=kind) == 0


@pytest.mark.parametrize("options", ["yes", [1], 3])
def test_stream_options_not_an_object_is_forwarded_for_upstream_to_refuse(
    start_sidecar, stub_url, options
):
    sidecar = start_sidecar(stub_url)
    client = openai.OpenAI(base_url=sidecar.url + "/v1", api_key="x", max_retries=0)
    with pytest.raises(openai.BadRequestError) as caught:  # the stub's (vLLM's) 400, not a 500
        client.chat.completions.create(
            model="m", messages=MESSAGES, stream=True, extra_body={"stream_options": options}
        )
    assert "stream_options" in caught.value.message
    sidecar.flush()
    assert sidecar.rows("SELECT status_code FROM requests") == [(400,)]


@pytest.mark.parametrize(
    "body",
    [
        b'{"model": "support", "temperature": NaN, "messages": [{"role": "user", "content": "hi"}]}',
        b'{"model": "support", "messages": [{"role": "user", "content": "a\\ud800b"}]}',
        b'{"model": "support", "seed": 123456789012345678901234567890, "messages": []}',
    ],
)
def test_bodies_orjson_refuses_are_aliased_captured_and_counted(start_sidecar, stub_url, body):
    sidecar = start_sidecar(stub_url, aliases={"support": "served-v1"})
    reply = httpx.post(
        sidecar.url + "/v1/chat/completions",
        content=body,
        headers={**ECHO, "content-type": "application/json"},
    )
    forwarded = echoed(reply)["body"]
    assert json.loads(forwarded)["model"] == "served-v1"
    assert forwarded.replace("served-v1", "support").replace(" ", "") == body.decode().replace(
        " ", ""
    )
    sidecar.flush()
    assert sidecar.rows("SELECT model_alias, served_model FROM requests") == [
        ("support", "served-v1")
    ]
    assert (
        sidecar.metric("driftloop_capture_decisions_total", model="support", decision="sampled_in")
        == 1
    )


def _raw_request(
    base_url: str, method: str, target: str, body: object, headers: dict[str, str]
) -> bytes:
    """One request with the target sent byte for byte (HTTP clients normalise dot segments)."""
    host, port = base_url.removeprefix("http://").split(":")
    payload = b"" if body is None else json.dumps(body).encode()
    lines = [f"{method} {target} HTTP/1.1", f"host: {host}", f"content-length: {len(payload)}"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    lines += ["content-type: application/json", "connection: close", "", ""]
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall("\r\n".join(lines).encode() + payload)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)
