"""Real labelled text shipped by packages, for staged traffic and drift evaluation (offline)."""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

import yaml


class CorpusError(RuntimeError):
    """A corpus package or category is missing; the message says what to install."""


@dataclass(frozen=True, slots=True)
class Conversation:
    category: str
    prompt: str
    answer: str | None


def chatterbot_dir(language: str = "english") -> Path:
    """The data folder of the ``chatterbot-corpus`` package (found without importing it)."""
    spec = importlib.util.find_spec("chatterbot_corpus")
    if spec is None or not spec.submodule_search_locations:
        raise CorpusError(
            "chatterbot-corpus is not installed: pip install chatterbot-corpus==1.3.3"
        )
    folder = Path(spec.submodule_search_locations[0]) / "data" / language
    if not folder.is_dir():
        raise CorpusError(f"chatterbot-corpus has no language {language!r} at {folder}")
    return folder


def chatterbot_conversations(
    categories: list[str] | None = None, language: str = "english"
) -> list[Conversation]:
    """First user turn and first answer of every conversation in the given categories."""
    folder = chatterbot_dir(language)
    available = sorted(path.stem for path in folder.glob("*.yml"))
    chosen = categories or available
    unknown = sorted(set(chosen) - set(available))
    if unknown:
        raise CorpusError(f"unknown chatterbot categories {unknown}; available: {available}")
    out = []
    for category in chosen:
        data = yaml.safe_load((folder / f"{category}.yml").read_text(encoding="utf-8"))
        for turns in data.get("conversations") or ():
            if not turns or not isinstance(turns[0], str):
                continue
            answer = turns[1] if len(turns) > 1 and isinstance(turns[1], str) else None
            out.append(Conversation(category, turns[0].strip(), answer))
    return out
