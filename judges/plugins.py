"""Judge plugins: every judge kind registers itself once under a name (``register_judge``).

>>> from judges.plugins import build_rule_judge
>>> judge = build_rule_judge("length", {"min_chars": 1, "max_chars": 10})
>>> judge.name, judge.kind
('length', 'length')
"""

from __future__ import annotations

import contextlib
import importlib
import inspect
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Callable
from typing import Any, ClassVar, TypeVar

from judges.verdict import Verdict

# Modules that define judges; imported by ``judge_kinds`` so every kind is registered.
JUDGE_MODULES = ("judges.rules", "judges.llm")


class Judge(ABC):
    """Scores one (prompt, response) pair on the 1-5 scale, or says why it could not."""

    kind: ClassVar[str] = ""
    uses_budget: ClassVar[bool] = False  # True when a call costs tokens (LLM judges)

    def __init__(self, name: str, version: str, judge_model: str | None = None) -> None:
        self.name = name  # the `judge` label and column: bounded by configuration
        self.version = version  # rubric content hash, or a hash of the rule's parameters
        self.judge_model = judge_model

    @contextlib.asynccontextmanager
    async def session(self) -> AsyncIterator[None]:
        """Resources held for one judging pass on one event loop (an HTTP client, say)."""
        yield

    @abstractmethod
    async def evaluate(self, prompt: str, response: str) -> Verdict:
        """The verdict on one exchange; never raises for a bad answer or an unreachable judge."""


J = TypeVar("J", bound=type[Judge])
JUDGES: dict[str, type[Judge]] = {}


def register_judge(kind: str) -> Callable[[J], J]:
    """Class decorator: make a judge kind available by name (once)."""

    def add(cls: J) -> J:
        if kind in JUDGES and JUDGES[kind] is not cls:
            raise ValueError(f"judge kind {kind!r} is already registered by {JUDGES[kind]}")
        cls.kind = kind
        JUDGES[kind] = cls
        return cls

    return add


def judge_kinds() -> dict[str, type[Judge]]:
    """Every registered judge kind (importing the modules that define them)."""
    for module in JUDGE_MODULES:
        importlib.import_module(module)
    return dict(JUDGES)


def rule_kinds() -> list[str]:
    """Judge kinds that need no model: they are built from their parameters alone."""
    return sorted(kind for kind, cls in judge_kinds().items() if not cls.uses_budget)


def build_rule_judge(kind: str, params: dict[str, Any]) -> Judge:
    """A rule judge from its configured parameters; errors name the kind and what was wrong."""
    kinds = rule_kinds()
    if kind not in kinds:
        raise ValueError(f"unknown rule judge {kind!r}; available: {kinds}")
    cls = JUDGES[kind]
    accepted = [p for p in inspect.signature(cls.__init__).parameters if p != "self"]
    unknown = sorted(set(params) - set(accepted))
    if unknown:
        raise ValueError(f"rule judge {kind!r} has no parameter(s) {unknown}; it takes {accepted}")
    try:
        return cls(**params)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"rule judge {kind!r} with {params!r}: {exc}") from None
