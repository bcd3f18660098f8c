"""Assembling rows from raw exchange bytes: the exact texts, tokens and finish reasons."""

import json

from monitor.capture import (
    CapturedExchange,
    assemble_stream,
    is_usage_only_event,
    prompt_text,
    rows_to_arrow,
    to_row,
)


def _chunk(content=None, finish=None, usage=None, choices=True):
    body = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "model": "m"}
    if choices:
        delta = {} if content is None else {"content": content}
        body["choices"] = [{"index": 0, "delta": delta, "finish_reason": finish}]
    else:
        body["choices"] = []
    if usage:
        body["usage"] = usage
    return b"data: " + json.dumps(body).encode() + b"\n\n"


def test_stream_assembles_text_finish_reason_and_usage():
    raw = (
        _chunk("Hel")
        + _chunk("lo")
        + _chunk(finish="length")
        + _chunk(usage={"prompt_tokens": 7, "completion_tokens": 2}, choices=False)
        + b"data: [DONE]\n\n"
    )
    out = assemble_stream(raw)
    assert (out.text, out.finish_reason, out.prompt_tokens, out.completion_tokens) == (
        "Hello",
        "length",
        7,
        2,
    )
    assert out.upstream_id == "chatcmpl-1"


def test_stream_survives_garbage_lines():
    out = assemble_stream(b"data: {not json\n\n" + _chunk("ok") + b": comment\n\n")
    assert out.text == "ok"


def test_usage_only_event_is_recognised_and_content_is_not():
    usage = _chunk(usage={"prompt_tokens": 1, "completion_tokens": 1}, choices=False)
    assert is_usage_only_event(usage)
    assert not is_usage_only_event(_chunk("x"))
    # A content chunk that mentions the words in its text is not a usage event.
    assert not is_usage_only_event(_chunk('"usage" and "choices":[]'))


def test_prompt_text_is_the_last_user_turn_or_the_prompt():
    messages = [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "first"},
        {"role": "assistant", "content": "a"},
        {"role": "user", "content": [{"type": "text", "text": "second"}]},
    ]
    assert prompt_text({"messages": messages}) == "second"
    assert prompt_text({"prompt": "complete me"}) == "complete me"
    assert prompt_text({"prompt": [1, 2, 3]}) is None


def test_row_from_a_non_json_error_body_keeps_status_and_redacts():
    exchange = CapturedExchange(
        request_id="r1",
        started_at=0.0,
        route="chat_completions",
        model_alias="a",
        served_model="b",
        stream=False,
        request_body=b'{"messages":[{"role":"user","content":"my key sk-123"}]}',
        status_code=500,
        response_body=b"Internal Server Error",
    )
    row = to_row(exchange, lambda text: text.replace("sk-123", "[REDACTED]"))
    assert row["status_code"] == 500
    assert row["response_text"] is None
    assert row["prompt_text"] == "my key [REDACTED]"
    assert "sk-123" not in row["request_json"]
    assert rows_to_arrow([row]).num_rows == 1


def test_session_key_groups_the_turns_of_one_conversation():
    from monitor.capture import session_key

    system = {"role": "system", "content": "be brief"}
    first = {"role": "user", "content": "my printer is offline"}
    turn1 = {"messages": [system, first]}
    turn3 = {
        "messages": [
            system,
            first,
            {"role": "assistant", "content": "is it plugged in?"},
            {"role": "user", "content": "yes"},
        ]
    }
    other = {"messages": [system, {"role": "user", "content": "hello"}]}
    key = session_key(turn1, "support")
    assert key is not None and key.startswith("c:") and "printer" not in key
    assert session_key(turn3, "support") == key
    assert session_key(other, "support") != key
    assert session_key(turn1, "other-alias") != key
    assert session_key({**turn3, "user": "alice"}, "support").startswith("u:")
    assert session_key({"prompt": "x"}, "support") is None
    assert session_key(None, "support") is None

    # Taken over the redacted text: two openings that differ only in a secret share a key.
    def hide(text: str) -> str:
        return text.replace("sk-one", "[REDACTED]").replace("sk-two", "[REDACTED]")

    secret_one = {"messages": [{"role": "user", "content": "my key is sk-one"}]}
    secret_two = {"messages": [{"role": "user", "content": "my key is sk-two"}]}
    assert session_key(secret_one, "support", hide) == session_key(secret_two, "support", hide)
    assert session_key(secret_one, "support") != session_key(secret_two, "support")
