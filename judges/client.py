"""Chat completions against any OpenAI-compatible endpoint, with retries that can be seen.

The official ``openai`` SDK speaks the protocol; its own retries are switched off so that every
attempt and every backoff delay is ours to count, record and test (the judges' budget counts
attempts). ``RetryPolicy`` is driftloop's one retry policy for OpenAI-compatible calls: the judges
use it here, the gate through ``call_with_retries``. 429, 408 and 5xx answers, timeouts and
refused connections are retried with exponential backoff (equal jitter), honouring
``retry-after-ms`` / ``retry-after`` from the server up to ``max_backoff_s``.

>>> policy = RetryPolicy(max_retries=3, backoff_s=1.0, max_backoff_s=30.0)
>>> [policy.delay(n, jitter=1.0) for n in (1, 2, 3)], policy.delay(1, hint=0.25)
([1.0, 2.0, 4.0], 0.25)
"""

from __future__ import annotations

import asyncio
import os
import random
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

import openai

# Own generator: retry jitter never moves the global `random` state (seeded code, hypothesis).
_JITTER = random.Random()

RETRYABLE_STATUS = frozenset({408, 429})
T = TypeVar("T")


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how patiently to retry a transient failure of an OpenAI-compatible call."""

    max_retries: int = 3
    backoff_s: float = 1.0
    max_backoff_s: float = 30.0

    def delay(self, attempt: int, hint: float | None = None, jitter: float = 1.0) -> float:
        """Delay before retry ``attempt``: the server's hint, else backoff_s·2^(n-1)·(0.5+0.5·jitter)."""
        if hint is not None:
            return min(self.max_backoff_s, max(0.0, hint))
        base = min(self.max_backoff_s, self.backoff_s * 2 ** (attempt - 1))
        return base * (0.5 + 0.5 * jitter)


@dataclass(frozen=True)
class Failure:
    """What one failed attempt means: retry or not, the server's delay hint, a bounded kind."""

    retry: bool
    hint: float | None
    kind: str  # timeout | unreachable | status_<code> | protocol
    message: str


def classify(exc: openai.APIError, base_url: str, timeout_s: float | None = None) -> Failure:
    """Whether ``exc`` from the openai SDK is worth another attempt, and how to report it."""
    if isinstance(exc, openai.APIStatusError):
        status = exc.status_code
        retry = status in RETRYABLE_STATUS or status >= 500
        hint = _retry_after(exc.response.headers) if retry else None
        return Failure(retry, hint, f"status_{status}", f"HTTP {status}: {_short(exc.message)}")
    if isinstance(exc, openai.APITimeoutError):
        return Failure(True, None, "timeout", f"no answer within {timeout_s} s")
    if isinstance(exc, openai.APIConnectionError):
        return Failure(True, None, "unreachable", f"cannot reach {base_url}: {exc}")
    # a 200 whose body is not a chat completion
    return Failure(False, None, "protocol", f"malformed answer: {_short(str(exc))}")


def call_with_retries(
    call: Callable[[], T],
    policy: RetryPolicy,
    *,
    base_url: str = "",
    sleep: Callable[[float], None] = time.sleep,
    jitter: Callable[[], float] = _JITTER.random,
) -> T:
    """Run a blocking SDK call under ``policy``; the last error is re-raised as the SDK raised it.

    For a client built with ``max_retries=0``, so that this is the only policy applied.
    """
    attempt = 0
    while True:
        attempt += 1
        try:
            return call()
        except openai.APIError as exc:
            failure = classify(exc, base_url)
            if not failure.retry or attempt > policy.max_retries:
                raise
            sleep(policy.delay(attempt, failure.hint, jitter()))


@dataclass(frozen=True)
class Endpoint:
    """Where a judge model is served and how patiently to call it."""

    base_url: str  # the OpenAI base URL, ending in /v1
    model: str
    api_key_env: str = ""  # env var holding the key; unset or empty sends "EMPTY" (vLLM needs none)
    timeout_s: float = 30.0
    max_retries: int = 3
    backoff_s: float = 1.0
    max_backoff_s: float = 30.0
    # A key held in memory (the launched vLLM's), preferred over api_key_env; kept out of repr.
    api_key_value: str | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if not self.base_url.startswith(("http://", "https://")):
            raise ValueError(f"judge base_url {self.base_url!r} must start with http(s)://")
        if not self.model:
            raise ValueError("judge model must be named")
        if self.timeout_s <= 0 or self.max_retries < 0 or self.backoff_s < 0:
            raise ValueError("timeout_s must be > 0, max_retries and backoff_s >= 0")

    @property
    def retry(self) -> RetryPolicy:
        return RetryPolicy(self.max_retries, self.backoff_s, self.max_backoff_s)

    def api_key(self, environ: Mapping[str, str] | None = None) -> str:
        if self.api_key_value:
            return self.api_key_value
        env = os.environ if environ is None else environ
        return (env.get(self.api_key_env) if self.api_key_env else None) or "EMPTY"


@dataclass
class ChatResult:
    text: str | None
    model: str
    prompt_tokens: int
    completion_tokens: int
    attempts: int
    delays: list[float] = field(default_factory=list)


class ChatCallError(RuntimeError):
    """The endpoint gave no usable answer after all attempts; ``kind`` is short and bounded."""

    def __init__(self, message: str, kind: str, attempts: int, delays: list[float]) -> None:
        super().__init__(message)
        self.kind = kind  # timeout | unreachable | status_<code> | protocol
        self.attempts = attempts
        self.delays = delays


class ChatClient:
    """One AsyncOpenAI client for one event loop; use as ``async with ChatClient(endpoint)``."""

    def __init__(
        self,
        endpoint: Endpoint,
        *,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        jitter: Callable[[], float] = _JITTER.random,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        self.endpoint = endpoint
        self._sleep = sleep
        self._jitter = jitter
        self._client = openai.AsyncOpenAI(
            base_url=endpoint.base_url,
            api_key=endpoint.api_key(environ),
            timeout=endpoint.timeout_s,
            max_retries=0,
        )

    async def __aenter__(self) -> ChatClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._client.close()

    async def chat(
        self,
        messages: list[dict[str, str]],
        *,
        max_tokens: int,
        response_format: dict[str, Any] | None = None,
    ) -> ChatResult:
        """One completion at temperature 0; retries transient failures, raises ChatCallError."""
        delays: list[float] = []
        extra: dict[str, Any] = {"response_format": response_format} if response_format else {}
        attempt = 0
        while True:
            attempt += 1
            try:
                completion = await self._client.chat.completions.create(
                    model=self.endpoint.model,
                    messages=messages,  # type: ignore[arg-type]
                    max_tokens=max_tokens,
                    temperature=0,
                    **extra,
                )
            except openai.APIError as exc:
                failure = classify(exc, self.endpoint.base_url, self.endpoint.timeout_s)
            else:
                return _result(completion, attempt, delays)
            if not failure.retry or attempt > self.endpoint.max_retries:
                raise ChatCallError(
                    f"{failure.message} (after {attempt} attempt{'s' if attempt > 1 else ''})",
                    failure.kind,
                    attempt,
                    delays,
                )
            delay = self.backoff(attempt, failure.hint)
            delays.append(delay)
            await self._sleep(delay)

    def backoff(self, attempt: int, hint: float | None = None) -> float:
        """Delay before retry number ``attempt`` under the endpoint's policy (jitter injected)."""
        return self.endpoint.retry.delay(attempt, hint, self._jitter())


def _result(completion: Any, attempts: int, delays: list[float]) -> ChatResult:
    choices = getattr(completion, "choices", None)
    if not choices:
        raise ChatCallError("answer has no choices", "protocol", attempts, delays)
    usage = getattr(completion, "usage", None)
    return ChatResult(
        text=choices[0].message.content,
        model=str(getattr(completion, "model", "") or ""),
        prompt_tokens=int(getattr(usage, "prompt_tokens", 0) or 0),
        completion_tokens=int(getattr(usage, "completion_tokens", 0) or 0),
        attempts=attempts,
        delays=delays,
    )


def _retry_after(headers: Mapping[str, str]) -> float | None:
    """Seconds the server asked us to wait (``retry-after-ms`` or numeric ``retry-after``)."""
    for name, scale in (("retry-after-ms", 0.001), ("retry-after", 1.0)):
        value = headers.get(name)
        if value is None:
            continue
        try:
            return float(value) * scale
        except ValueError:
            continue  # an HTTP date: fall back to our own backoff
    return None


def _short(text: str, limit: int = 300) -> str:
    return text if len(text) <= limit else text[:limit] + "..."
