"""What the proxy does with one request: the alias rewrite and the capture decision.

Kept apart from the proxy's I/O so that the decision can be tested on arbitrary bodies alone.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from monitor import jsonbody
from monitor.aliases import AliasTable
from monitor.capture import CapturedExchange
from monitor.metrics import DropReason, SidecarMetrics
from monitor.sampling import SampleDecision, Sampler


@dataclass(slots=True)
class Plan:
    """What the proxy will do with one request after reading its body."""

    route: str
    body: bytes
    exchange: CapturedExchange | None = None
    strip_usage_event: bool = False
    finished: bool = False
    chunks: list[bytes] | None = None  # response bytes as received, when capturing
    status: int = 0  # the upstream's status, once its headers arrived


def canary_key(payload: dict[str, object], session: str | None) -> str | None:
    """What keeps a conversation on one side of a canary: the session header, the ``user``
    field, else its first user message (every later turn resends it; a system prompt is shared
    by everyone, so it is skipped); None: no key, a random side."""
    if session:
        return "h:" + session
    user = payload.get("user")
    if isinstance(user, str) and user:
        return "u:" + user
    messages = payload.get("messages")
    for message in messages if isinstance(messages, list) else ():
        if isinstance(message, dict) and message.get("role") == "user":
            first = message.get("content")
            return "m:" + first[:2000] if isinstance(first, str) and first else None
    prompt = payload.get("prompt")
    return "p:" + prompt[:2000] if isinstance(prompt, str) and prompt else None


class CapturePlanner:
    """Rewrites ``model`` through the alias table and decides (and counts) capture."""

    def __init__(
        self,
        aliases: AliasTable,
        sampler: Sampler,
        metrics: SidecarMetrics,
        *,
        capture_enabled: bool,
        max_body_bytes: int,
    ) -> None:
        self.aliases = aliases
        self.sampler = sampler
        self.metrics = metrics
        self.capture_enabled = capture_enabled
        self._max_body_bytes = max_body_bytes

    def plan(
        self, plan: Plan, header: str | None, started_wall: float, session: str | None = None
    ) -> None:
        """Apply the alias table and sampling; rewrite the body only when something changes.

        ``session`` is the configured session header's value: with the body's ``user`` and its
        first message it keys a canary's split, so a conversation stays on one version.
        """
        payload, strict = jsonbody.loads(plan.body)
        if not isinstance(payload, dict):
            return  # not a JSON object: upstream answers with its own 400, passed through verbatim
        model = payload.get("model") if isinstance(payload.get("model"), str) else None
        # Only an alias that runs a canary needs the request's key (it scans the messages).
        key = canary_key(payload, session) if self.aliases.has_canary(model) else None
        served = self.aliases.resolve(model, key)
        changed = served != model
        if changed:
            payload["model"] = served
        decision = (
            SampleDecision.SAMPLED_OUT
            if not self.capture_enabled
            else self.sampler.decide(model, header)
        )
        self.metrics.capture_decisions.labels(
            model=self.aliases.label(model), decision=decision
        ).inc()
        stream = payload.get("stream") is True
        if decision.captures:
            if len(plan.body) > self._max_body_bytes:
                self.metrics.drop(DropReason.TOO_LARGE)
            else:
                plan.exchange = CapturedExchange(
                    # 128 random bits as hex, like uuid4().hex at a quarter of its cost.
                    request_id=os.urandom(16).hex(),
                    started_at=started_wall,
                    route=plan.route,
                    model_alias=model,
                    served_model=served,
                    stream=stream,
                    request_body=plan.body,
                )
                options = payload.get("stream_options")
                # Options that are not an object are the upstream's to refuse (400), untouched.
                usable = options is None or isinstance(options, dict)
                if stream and usable and not (options or {}).get("include_usage"):
                    payload["stream_options"] = {**(options or {}), "include_usage": True}
                    plan.strip_usage_event = changed = True
        if changed:
            plan.body = jsonbody.dumps(payload, strict)
