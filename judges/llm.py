"""The rubric judge: an LLM behind any OpenAI-compatible endpoint scores an exchange 1-5.

>>> from judges.client import Endpoint
>>> from judges.rubric import load_rubric
>>> judge = RubricJudge(load_rubric("helpfulness"), Endpoint("http://127.0.0.1:8000/v1", "smollm2"))
>>> judge.name, judge.kind, judge.judge_model
('helpfulness', 'rubric', 'smollm2')
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

from judges.client import ChatCallError, ChatClient, Endpoint
from judges.metrics import Outcome
from judges.plugins import Judge, register_judge
from judges.rubric import Rubric
from judges.verdict import RAW_LIMIT, SCALE_MAX, SCALE_MIN, Verdict, parse_verdict

MAX_INPUT_CHARS = 2000  # of the prompt and of the response each: bounds the judge's tokens

# A JSON schema the endpoint may enforce (vLLM: structured outputs); the verdict is parsed the
# same way either way, so an endpoint that ignores it costs nothing but parse failures.
VERDICT_SCHEMA: dict[str, Any] = {
    "type": "json_schema",
    "json_schema": {
        "name": "verdict",
        "strict": True,
        "schema": {
            "type": "object",
            "properties": {
                "score": {"type": "integer", "enum": list(range(SCALE_MIN, SCALE_MAX + 1))},
                "reason": {"type": "string", "maxLength": 300},
            },
            "required": ["score", "reason"],
            "additionalProperties": False,
        },
    },
}


@register_judge("rubric")
class RubricJudge(Judge):
    """Asks a chat model for a JSON verdict against a rubric file; costs tokens (budgeted)."""

    uses_budget = True

    def __init__(
        self,
        rubric: Rubric,
        endpoint: Endpoint,
        *,
        max_tokens: int = 128,
        structured_output: bool = False,
        client_factory: Callable[[Endpoint], ChatClient] = ChatClient,
    ) -> None:
        super().__init__(rubric.name, rubric.version, endpoint.model)
        self.rubric = rubric
        self.endpoint = endpoint
        self.max_tokens = max_tokens
        self.structured_output = structured_output
        self._client_factory = client_factory
        # One client per event loop: the traffic and anchor jobs judge from different threads.
        self._clients: dict[asyncio.AbstractEventLoop, ChatClient] = {}

    @contextlib.asynccontextmanager
    async def session(self) -> AsyncIterator[None]:
        loop = asyncio.get_running_loop()
        async with self._client_factory(self.endpoint) as client:
            self._clients[loop] = client
            try:
                yield
            finally:
                del self._clients[loop]

    def messages(self, prompt: str, response: str) -> list[dict[str, str]]:
        user = (
            f"User message:\n{_clip(prompt)}\n\nAssistant answer:\n{_clip(response)}\n\n"
            "Your JSON verdict:"
        )
        return [
            {"role": "system", "content": self.rubric.system_prompt()},
            {"role": "user", "content": user},
        ]

    async def evaluate(self, prompt: str, response: str) -> Verdict:
        client = self._clients.get(asyncio.get_running_loop())
        if client is None:
            async with self.session():
                return await self.evaluate(prompt, response)
        started = time.perf_counter()
        try:
            result = await client.chat(
                self.messages(prompt, response),
                max_tokens=self.max_tokens,
                response_format=VERDICT_SCHEMA if self.structured_output else None,
            )
        except ChatCallError as exc:
            return Verdict(
                Outcome.ERROR,
                reason=str(exc),
                attempts=exc.attempts,
                latency_s=time.perf_counter() - started,
                judge_model=self.judge_model,
            )
        parsed = parse_verdict(result.text)
        return Verdict(
            Outcome.SCORED if parsed.score is not None else Outcome.UNPARSEABLE,
            score=float(parsed.score) if parsed.score is not None else None,
            reason=parsed.reason,
            raw=(result.text or "")[:RAW_LIMIT],
            prompt_tokens=result.prompt_tokens,
            completion_tokens=result.completion_tokens,
            attempts=result.attempts,
            latency_s=time.perf_counter() - started,
            judge_model=result.model or self.judge_model,
        )


def _clip(text: str) -> str:
    if len(text) <= MAX_INPUT_CHARS:
        return text
    return text[:MAX_INPUT_CHARS] + " [...]"
