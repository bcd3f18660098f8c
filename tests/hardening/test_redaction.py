"""Redaction: built-in detectors, configured patterns, escaped secrets, and feedback text."""

from __future__ import annotations

import json
import typing
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import httpx
import openai
import pytest
from click.testing import CliRunner

from benchmarks.upstream_stub import running_stub
from driftloop.cli.main import cli
from driftloop.config import CaptureConfig
from monitor.redaction import DETECTORS, PLACEHOLDER, PatternRedactor, redact_json
from tests.hardening.api_running import running_api
from tests.servers import serve_in_thread

REDACT = PatternRedactor([], detectors=DETECTORS)
FORCE = {"x-driftloop-capture": "force"}
SECRET = "sk-proj-Ab3dEf6hIj9kLm2nOp5qRs8tUv1wXy4z"

# Real-format examples (published test values or synthetic keys of the documented shape).
SECRETS = [
    pytest.param("sk-proj-Ab3dEf6hIj9kLm2nOp5qRs8tUv1wXy4zT7", id="openai-project"),
    pytest.param("sk-svcacct-Q1w2E3r4T5y6U7i8O9p0A1s2D3f4", id="openai-service-account"),
    pytest.param("sk-Zx9Cv8Bn7Mm6Ll5Kk4Jj3Hh2Gg1Ff0", id="openai-legacy"),
    pytest.param("AKIAIOSFODNN7EXAMPLE", id="aws-access-key"),
    pytest.param("ghp_" + "a1B2c3D4e5F6g7H8i9J0k1L2m3N4o5P6q7R8", id="github-classic"),
    pytest.param("github_pat_11ABCDEFG0123456789_abcdefghijklmnopqrstuvwxyz", id="github-fine"),
    pytest.param("4111 1111 1111 1111", id="visa-spaces"),
    pytest.param("5555-5555-5555-4444", id="mastercard-dashes"),
    pytest.param("378282246310005", id="amex-plain"),
    pytest.param("jane.doe+billing@example.co.uk", id="email"),
]
CONTEXTS = [
    "my key is {}, keep it safe",
    "Authorization: Bearer {}",
    '{{"api_key": "{}"}}',
]


@pytest.mark.parametrize("secret", SECRETS)
@pytest.mark.parametrize("context", CONTEXTS)
def test_the_default_detectors_redact_real_secrets(secret: str, context: str):
    assert REDACT(context.format(secret)) == context.format(PLACEHOLDER)


@pytest.mark.parametrize(
    "text",
    [
        "order 1234567890123 shipped",  # 13 digits, fails the Luhn check
        "call 4111 1111 1111 1112 now",  # card-shaped, fails the Luhn check
        "the sk-learn docs and sk-short",  # not key-shaped
        "ask-question-about-the-weather-today",  # 'sk-' inside a word
        "the token is valid, password reset via Settings",  # words after the keywords
        "version 2024-05-01, ticket #4521, 3.14159",
        "user@localhost has no domain",
    ],
)
def test_text_that_is_not_a_secret_survives(text: str):
    assert REDACT(text) == text


def test_each_pattern_compiles_on_its_own_so_inline_flags_work():
    redact = PatternRedactor([r"(?i)internal-[a-z0-9]{4}", r"(?x) ticket \s - \s \d+"])
    assert redact("see INTERNAL-ab12 and ticket - 42") == f"see {PLACEHOLDER} and {PLACEHOLDER}"


def test_overlapping_matches_become_one_placeholder_and_empty_matches_nothing():
    redact = PatternRedactor([r"secret-\w+", r"\w+-value", "x*"], detectors=["secrets"])
    assert redact("a secret-long-value b") == f"a {PLACEHOLDER} b"
    assert redact("plain") == "plain"


def test_redact_json_sees_through_unicode_escapes_and_reserialises():
    escaped = SECRET.replace("p", "\\u0070").replace("-", "\\u002d")
    body = ('{"messages":[{"role":"user","content":"key ' + escaped + '"}],"n":1}').encode()
    stored = redact_json(body, REDACT)
    assert json.loads(stored) == {
        "messages": [{"role": "user", "content": f"key {PLACEHOLDER}"}],
        "n": 1,
    }
    assert "Ab3dEf6hIj" not in stored


def test_a_body_orjson_refuses_is_redacted_as_text_with_escapes_decoded():
    escaped = SECRET.replace("k", "\\u006b")
    body = ('{"prompt": "' + escaped + '", "x": NaN, "bad": "\\ud800"}').encode()
    stored = redact_json(body, REDACT)
    assert "Ab3dEf6hIj" not in stored and PLACEHOLDER in stored
    assert "\\ud800" in stored  # a lone surrogate stays escaped: it cannot be stored as UTF-8


Scope = MutableMapping[str, Any]


async def echo_app(scope: Scope, receive: Callable[[], Awaitable[Any]], send: Any) -> None:
    """An upstream that answers the user's text back, JSON-escaped (ensure_ascii and \\u002d)."""
    if scope["type"] != "http":
        return
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    request = json.loads(body)
    text = "echo: " + request["messages"][-1]["content"]

    def dump(obj: object) -> bytes:
        return json.dumps(obj, ensure_ascii=True).replace("-", "\\u002d").encode()

    if request.get("stream"):
        half = len(text) // 2  # the secret is split across two chunks
        events = [
            {"id": "c1", "choices": [{"index": 0, "delta": {"content": piece}}]}
            for piece in (text[:half], text[half:])
        ]
        events.append({"id": "c1", "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
        payload = b"".join(b"data: " + dump(e) + b"\n\n" for e in events) + b"data: [DONE]\n\n"
        headers = [(b"content-type", b"text/event-stream")]
    else:
        message = {"role": "assistant", "content": text}
        payload = dump(
            {"id": "c1", "object": "chat.completion", "model": request["model"],
             "choices": [{"index": 0, "message": message, "finish_reason": "stop"}]}
        )  # fmt: skip
        headers = [(b"content-type", b"application/json")]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": payload})


@pytest.mark.parametrize("stream", [False, True])
def test_a_sidecar_capture_of_an_escaped_secret_stores_no_secret(start_sidecar, stream: bool):
    with serve_in_thread(echo_app) as upstream:
        sidecar = start_sidecar(upstream)
        escaped = "".join(f"\\u{ord(c):04x}" for c in SECRET)  # every character escaped
        content = f"my key {escaped} and card 4111-1111-1111-1111"
        message = '{"role":"user","content":"' + content + '"}'  # the escapes go out as typed
        raw = f'{{"model":"m","stream":{json.dumps(stream)},"messages":[{message}]}}'
        reply = httpx.post(
            sidecar.url + "/v1/chat/completions",
            content=raw.encode(),
            headers={**FORCE, "content-type": "application/json"},
        )
        assert reply.status_code == 200
        if not stream:  # the client gets the answer unredacted; only storage is redacted
            assert SECRET in reply.json()["choices"][0]["message"]["content"]
        sidecar.flush()
        [(request_json, prompt, response)] = sidecar.rows(
            "SELECT request_json, prompt_text, response_text FROM requests"
        )
    for stored in (request_json, prompt, response):
        for spelling in (SECRET, escaped, SECRET[8:20], "4111-1111", "\\u0041\\u0062"):
            assert spelling not in stored
    assert prompt == f"my key {PLACEHOLDER} and card {PLACEHOLDER}"
    assert response == f"echo: my key {PLACEHOLDER} and card {PLACEHOLDER}"
    assert json.loads(request_json)["messages"][0]["content"] == prompt


def test_the_openai_sdk_through_the_sidecar_with_a_configured_flagged_pattern(start_sidecar):
    with running_stub() as port:
        sidecar = start_sidecar(
            f"http://127.0.0.1:{port}", capture={"redact_patterns": [r"(?i)ticket-\d+"]}
        )
        client = openai.OpenAI(base_url=sidecar.url + "/v1", api_key="unused", max_retries=0)
        client.chat.completions.create(
            model="stub",
            messages=[{"role": "user", "content": f"TICKET-991 from {SECRET}"}],
            extra_headers=FORCE,
        )
        sidecar.flush()
        [(request_json, prompt)] = sidecar.rows("SELECT request_json, prompt_text FROM requests")
    assert prompt == f"{PLACEHOLDER} from {PLACEHOLDER}"
    assert "991" not in request_json and SECRET not in request_json


def test_feedback_prompts_and_answers_are_stored_redacted(tmp_path):
    with running_api(tmp_path, capture={"redact_patterns": ["(?i)acme-[0-9]+"]}) as api:
        reply = httpx.post(
            api.url + "/api/v1/feedback",
            json={
                "model": "support",
                "prompt": f"my key {SECRET}, account ACME-77",
                "answer": "refund card 4111 1111 1111 1111, mail bob@example.com",
            },
            headers=api.auth,
        )
        assert reply.status_code == 201, reply.text
        [(prompt, answer)] = api.parts.store.query("SELECT prompt, answer FROM feedback")
    assert prompt == f"my key {PLACEHOLDER}, account {PLACEHOLDER}"
    assert answer == f"refund card {PLACEHOLDER}, mail {PLACEHOLDER}"


@pytest.mark.parametrize(
    ("pattern", "error"),
    [
        ("(", "missing ), unterminated subpattern"),
        ("abc(?i)", "global flags not at the start"),
        ("[z-a]", "bad character range"),
    ],
)
def test_check_config_refuses_an_invalid_pattern_naming_it(tmp_path, pattern: str, error: str):
    path = tmp_path / "c.toml"
    path.write_text(f"[capture]\nredact_patterns = ['(?i)fine', {json.dumps(pattern)}]\n")
    result = CliRunner().invoke(cli, ["check-config", "--config", str(path)])
    assert result.exit_code == 1
    [line] = result.output.strip().splitlines()
    assert "capture.redact_patterns" in line and repr(pattern) in line and error in line
    assert "Traceback" not in result.output


def test_an_unknown_detector_is_refused_naming_it(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text('[capture]\nredact_detectors = ["secrets", "phones"]\n')
    result = CliRunner().invoke(cli, ["check-config", "--config", str(path)])
    assert result.exit_code == 1
    [line] = result.output.strip().splitlines()
    assert "capture.redact_detectors[1] = 'phones'" in line


def test_the_config_offers_every_detector_and_enables_all_by_default():
    field = CaptureConfig.model_fields["redact_detectors"]
    assert typing.get_args(typing.get_args(field.annotation)[0]) == tuple(DETECTORS)
    assert CaptureConfig().redact_detectors == list(DETECTORS)
