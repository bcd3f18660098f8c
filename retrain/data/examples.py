"""One chat example of a training set: parsed and checked from an input record, PII-scrubbed.

An input record is ``{"messages": [{"role", "content"}, ...], "source", "ref"}``, and for a
preference pair also ``"rejected"``: the answer not wanted in place of the last assistant turn.
Parsing names the record and the problem when it is malformed (``DatasetError``).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from retrain.data.dedupe import text_key
from retrain.data.files import DatasetError
from retrain.data.pii import scrub_text

# Order of preference when duplicates collide: an operator's correction beats a teacher's
# label, which beats a judged capture.
SOURCES = ("feedback", "teacher", "judged", "seed")  # seed: the production model's own data
ROLES = ("system", "user", "assistant")


@dataclass(frozen=True)
class Example:
    """One conversation (role, content turns), where it came from, and its text key."""

    messages: tuple[tuple[str, str], ...]
    source: str
    ref: str | int | None
    replay_from: str | None = None
    rejected: str | None = None  # the unwanted answer: a preference pair (DPO)
    key: str = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "key", text_key(self.text))

    @property
    def text(self) -> str:
        return "\n".join(f"{role}: {content}" for role, content in self.messages)

    @property
    def prompts(self) -> list[str]:
        return [content for role, content in self.messages if role == "user"]

    def record(self) -> dict[str, Any]:
        record = {
            "messages": [{"role": role, "content": content} for role, content in self.messages],
            "source": self.source,
            "ref": self.ref,
            "replay_from": self.replay_from,
        }
        if self.rejected is not None:  # absent, not null: a dataset without pairs hashes as before
            record["rejected"] = self.rejected
        return record


def parse_example(index: int, raw: object) -> Example:
    """Turn one input record into an Example, or raise naming the record and the problem."""
    where = f"example {index}"
    if not isinstance(raw, Mapping):
        raise DatasetError(f"{where}: expected a dict, got {type(raw).__name__}")
    ref = raw.get("ref")
    if ref is not None:
        where += f" (ref {ref!r})"
    if ref is not None and (isinstance(ref, bool) or not isinstance(ref, str | int)):
        raise DatasetError(f"{where}: ref must be a string or an integer")
    source = raw.get("source")
    if source not in SOURCES:
        raise DatasetError(f"{where}: source must be one of {list(SOURCES)}, got {source!r}")
    messages = raw.get("messages")
    if not isinstance(messages, Sequence) or isinstance(messages, str) or not messages:
        raise DatasetError(f"{where}: messages must be a non-empty list")
    parsed = []
    for position, message in enumerate(messages):
        if not isinstance(message, Mapping):
            raise DatasetError(f"{where}: message {position} is not a dict")
        role, content = message.get("role"), message.get("content")
        if role not in ROLES:
            raise DatasetError(f"{where}: message {position} has role {role!r}, not one of {ROLES}")
        if not isinstance(content, str):
            raise DatasetError(f"{where}: message {position} content must be a string")
        parsed.append((role, content))
    if parsed[-1][0] != "assistant":
        raise DatasetError(f"{where}: the last message must be the assistant's answer")
    if not any(role == "user" for role, _ in parsed):
        raise DatasetError(f"{where}: there is no user message")
    rejected = raw.get("rejected")
    if rejected is not None and (not isinstance(rejected, str) or not rejected.strip()):
        raise DatasetError(f"{where}: rejected must be a non-empty string")
    return Example(tuple(parsed), source, ref, rejected=rejected)


def scrub_example(example: Example, regions: Sequence[str], pii: Counter[str]) -> Example:
    """Return ``example`` with PII replaced in every turn, counting replacements in ``pii``."""
    messages = []
    for role, content in example.messages:
        result = scrub_text(content, phone_regions=regions)
        pii.update(result.counts)
        messages.append((role, result.text))
    rejected = example.rejected
    if rejected is not None:
        result = scrub_text(rejected, phone_regions=regions)
        pii.update(result.counts)
        rejected = result.text
    return Example(tuple(messages), example.source, example.ref, example.replay_from, rejected)
