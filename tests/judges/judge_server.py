"""A scripted judge: a real HTTP server speaking the OpenAI chat-completions schema.

The test decides every answer: a queue of scripted replies (status, verdict text, delay, headers)
is served first, then ``respond(messages)`` decides. Every request body is kept, so tests count
attempts and read what the judge was asked.
"""

from __future__ import annotations

import asyncio
import collections
import json
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

DEFAULT_VERDICT = '{"score": 3, "reason": "scripted default"}'
PROMPT_TOKENS = 120
COMPLETION_TOKENS = 12


@dataclass
class Reply:
    content: str | None = DEFAULT_VERDICT
    status: int = 200
    delay_s: float = 0.0
    headers: dict[str, str] = field(default_factory=dict)
    raw_body: bytes | None = None  # sent verbatim instead of a completion (malformed answers)


class ScriptedJudge:
    def __init__(self) -> None:
        self.script: collections.deque[Reply] = collections.deque()
        self.respond: Callable[[list[dict[str, Any]]], Reply] = lambda messages: Reply()
        self.requests: list[dict[str, Any]] = []
        self.model = "scripted-judge"
        self._lock = threading.Lock()
        self.app = Starlette(routes=[Route("/v1/chat/completions", self.chat, methods=["POST"])])
        self.url = ""  # set by the fixture: base URL ending in /v1

    @property
    def attempts(self) -> int:
        return len(self.requests)

    def user_messages(self) -> list[str]:
        return [r["messages"][-1]["content"] for r in self.requests]

    async def chat(self, request: Request) -> Response:
        body = await request.json()
        with self._lock:
            self.requests.append(body)
            reply = self.script.popleft() if self.script else self.respond(body["messages"])
        if reply.delay_s:
            await asyncio.sleep(reply.delay_s)
        if reply.raw_body is not None:
            return Response(reply.raw_body, status_code=reply.status, media_type="application/json")
        if reply.status != 200:
            error = {"error": {"message": f"scripted {reply.status}", "type": "scripted"}}
            return JSONResponse(error, status_code=reply.status, headers=reply.headers)
        return JSONResponse(
            {
                "id": f"chatcmpl-scripted-{len(self.requests)}",
                "object": "chat.completion",
                "created": 1_700_000_000,
                "model": body.get("model", self.model),
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": reply.content},
                        "finish_reason": "stop",
                    }
                ],
                "usage": {
                    "prompt_tokens": PROMPT_TOKENS,
                    "completion_tokens": COMPLETION_TOKENS,
                    "total_tokens": PROMPT_TOKENS + COMPLETION_TOKENS,
                },
            },
            headers=reply.headers,
        )


def verdict(score: object, reason: str = "scripted") -> Reply:
    return Reply(json.dumps({"score": score, "reason": reason}))
