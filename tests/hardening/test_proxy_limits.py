"""Request-side limits of the sidecar, as proxies have them; each refusal is counted by reason.

Issue 12 item 8 (request side): body size (413), header size (431), header and body time (408),
idle connections that never send a byte (closed), kept-alive idle connections, a connection cap
(503). Raw sockets stand in for misbehaving clients; the openai SDK for a well-behaved one.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest

from benchmarks.upstream_stub import running_stub

MESSAGES = [{"role": "user", "content": "hello"}]
DEADLINE_S = 20.0  # how long a test waits for the server to act; not an assertion on speed


@pytest.fixture(scope="module")
def stub_url() -> Iterator[str]:
    with running_stub() as port:
        yield f"http://127.0.0.1:{port}"


def connect(url: str) -> socket.socket:
    host, port = url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)), timeout=DEADLINE_S)
    return sock


def read_until_closed(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection (or the deadline passes)."""
    chunks = []
    deadline = time.monotonic() + DEADLINE_S
    while time.monotonic() < deadline:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            break
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)
    raise AssertionError(f"the server kept the connection open; it sent {b''.join(chunks)!r}")


def rejected(sidecar: Any, reason: str) -> float:
    return float(sidecar.metric("driftloop_proxy_rejected_total", reason=reason))


def test_connections_that_send_nothing_are_closed(start_sidecar, stub_url):
    sidecar = start_sidecar(stub_url, sidecar={"header_timeout_s": 0.5})
    socks = [connect(sidecar.url) for _ in range(50)]
    try:
        assert [read_until_closed(s) for s in socks] == [b""] * 50
    finally:
        for s in socks:
            s.close()
    assert rejected(sidecar, "idle_timeout") == 50


def test_headers_sent_too_slowly_get_a_408(start_sidecar, stub_url):
    sidecar = start_sidecar(stub_url, sidecar={"header_timeout_s": 0.5})
    with connect(sidecar.url) as sock:
        sock.sendall(b"GET /v1/models HTTP/1.1\r\nhost: x\r\n")  # and never the blank line
        reply = read_until_closed(sock)
    assert reply.startswith(b"HTTP/1.1 408 ") and b"sidecar.header_timeout_s" in reply
    assert rejected(sidecar, "header_timeout") == 1


def test_oversized_headers_get_a_431(start_sidecar, stub_url):
    sidecar = start_sidecar(stub_url, sidecar={"max_header_bytes": 4096})
    with connect(sidecar.url) as sock:
        sock.sendall(b"GET /v1/models HTTP/1.1\r\nhost: x\r\nx-big: " + b"a" * 8192 + b"\r\n\r\n")
        reply = read_until_closed(sock)
    assert reply.startswith(b"HTTP/1.1 431 ") and b"sidecar.max_header_bytes" in reply
    assert rejected(sidecar, "header_too_large") == 1
    # A request just under the limit, with a body in the same packet, still passes.
    ok = httpx.post(
        sidecar.url + "/v1/chat/completions",
        json={"model": "m", "messages": MESSAGES, "pad": "b" * 20000},
        headers={"x-pad": "c" * 3000},
    )
    assert ok.status_code == 200


def test_oversized_body_gets_a_413_in_the_sdk(start_sidecar, stub_url):
    sidecar = start_sidecar(stub_url, sidecar={"max_request_body_bytes": 65536})
    client = openai.OpenAI(base_url=sidecar.url + "/v1", api_key="x", max_retries=0)
    with pytest.raises(openai.APIStatusError) as caught:
        client.chat.completions.create(
            model="m", messages=[{"role": "user", "content": "x" * 200_000}]
        )
    assert caught.value.status_code == 413
    assert caught.value.body["code"] == "body_too_large"
    assert "sidecar.max_request_body_bytes" in caught.value.message
    # Without a content-length (chunked), the limit holds as the bytes come.
    chunked = httpx.post(
        sidecar.url + "/v1/chat/completions", content=iter([b"{" + b" " * 50_000] * 3)
    )
    assert chunked.status_code == 413
    assert rejected(sidecar, "body_too_large") == 2
    # The connection survives a refused body: the SDK's next request on it succeeds.
    assert client.chat.completions.create(model="m", messages=MESSAGES).choices
    sidecar.flush()
    assert sidecar.rows("SELECT count(*) FROM requests") == [(1,)]


def test_body_sent_too_slowly_gets_a_408(start_sidecar, stub_url):
    sidecar = start_sidecar(stub_url, sidecar={"body_timeout_s": 0.5})
    with connect(sidecar.url) as sock:
        sock.sendall(
            b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-length: 100\r\n\r\n{"
        )
        reply = read_until_closed(sock)
    assert reply.startswith(b"HTTP/1.1 408 ") and b"sidecar.body_timeout_s" in reply
    assert rejected(sidecar, "body_timeout") == 1


def test_idle_kept_alive_connection_is_closed(start_sidecar, stub_url):
    sidecar = start_sidecar(stub_url, sidecar={"keep_alive_timeout_s": 0.5})
    with connect(sidecar.url) as sock:
        sock.sendall(b"GET /v1/models HTTP/1.1\r\nhost: x\r\n\r\n")
        reply = read_until_closed(sock)
    assert reply.startswith(b"HTTP/1.1 200 ")  # answered, then closed once idle


def test_connections_beyond_the_cap_get_a_503(start_sidecar, stub_url):
    sidecar = start_sidecar(stub_url, sidecar={"max_client_connections": 3})
    held = [connect(sidecar.url) for _ in range(3)]
    try:
        # The three held ones are accepted first: a request on one of them is answered.
        held[0].sendall(b"GET /v1/models HTTP/1.1\r\nhost: x\r\n\r\n")
        assert held[0].recv(65536).startswith(b"HTTP/1.1 200 ")
        with connect(sidecar.url) as extra:
            reply = read_until_closed(extra)
    finally:
        for s in held:
            s.close()
    assert reply.startswith(b"HTTP/1.1 503 ") and b"sidecar.max_client_connections" in reply
    assert rejected(sidecar, "connection_limit") == 1
