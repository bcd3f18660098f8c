"""The embedded default scenario: a help-desk assistant whose traffic drifts from chit-chat
(domain A) to tech support (domain B), all real text from the chatterbot corpus.

The production model answers chit-chat; the company's house format for tech support is an answer
starting with "HelpDesk: ", which the base model never does. Labels for the drifted traffic come
from a teacher: the served base model itself, prompted with the house policy and three few-shot
answers (``HOUSE_POLICY``, ``write_teacher_examples``). A LoRA trained on its answers must learn
the format for problems it has never seen (the golden set's held-out ones), without touching
chit-chat. Operators can correct answers into that format instead (``house_format_feedback``).

Training material never includes a golden prompt: the drifted traffic, the few-shot examples and
the corrections use only the golden manifest's ``training_range`` problems, chit-chat only prompts
outside the set.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path

from monitor.corpora import chatterbot_conversations
from retrain.gate.golden import golden_prompts, load_golden_set, read_manifest

GOLDEN = "helpdesk"
HOUSE_PREFIX = "HelpDesk: "
HOUSE_FORMAT = "^HelpDesk: "  # the teacher's format check and the live slice's
HOUSE_POLICY = (
    "You are the HelpDesk assistant of a company. House policy: every answer to a technical"
    " support problem starts with 'HelpDesk: ' followed by one short, practical fix."
)
CHAT_CATEGORIES = (
    "ai",
    "botprofile",
    "emotion",
    "food",
    "greetings",
    "humor",
    "movies",
    "psychology",
)
TECH_CATEGORY = "tech_support"
# How users phrase a problem (different wordings from the golden set's, same problems).
FEEDBACK_PHRASINGS = (
    "{p}",
    "Help! {p}",
    "{p} Any idea why?",
    "I need support. {p}",
    "{p} How do I fix it?",
    "Hello. {p}",
    "{p} It started this morning.",
    "Support request: {p}",
)


@dataclass(frozen=True)
class Exchange:
    prompt: str
    answer: str


def clean_text(text: str) -> str:
    """One line, single spaces: the corpus has stray non-breaking spaces and newlines."""
    return " ".join(text.split())


def chitchat(exclude_golden: bool = True) -> list[Exchange]:
    """Chit-chat prompts with the corpus answers (domain A), golden prompts left out."""
    golden = set(golden_prompts(load_golden_set(GOLDEN))) if exclude_golden else set()
    seen: set[str] = set()
    out = []
    for c in chatterbot_conversations(list(CHAT_CATEGORIES)):
        if c.answer and c.prompt not in golden and c.prompt not in seen:
            seen.add(c.prompt)
            out.append(Exchange(c.prompt, clean_text(c.answer)))
    return out


def tech_support_problems() -> dict[str, str]:
    """Every distinct tech-support problem of the corpus with its answer (10 of them)."""
    return {
        c.prompt: clean_text(c.answer)
        for c in chatterbot_conversations([TECH_CATEGORY])
        if c.answer
    }


def tech_support_traffic(n: int, seed: int = 0) -> list[str]:
    """``n`` tech-support prompts (all problems, varied wording): the drifted traffic."""
    rng = random.Random(seed)
    problems = sorted(tech_support_problems())
    return [rng.choice(FEEDBACK_PHRASINGS).format(p=rng.choice(problems)) for _ in range(n)]


def training_range_problems() -> list[str]:
    """The tech-support problems the golden set leaves to training (its held-out ones are not)."""
    return list(read_manifest()["sets"][GOLDEN]["v1"]["training_range"][TECH_CATEGORY])


def drifted_traffic(n: int, seed: int = 0) -> list[str]:
    """``n`` tech-support prompts about the training-range problems, varied wording: the drift
    the demo stages (the held-out problems stay for the gate to measure)."""
    rng = random.Random(seed)
    problems = training_range_problems()
    return [rng.choice(FEEDBACK_PHRASINGS).format(p=rng.choice(problems)) for _ in range(n)]


def house_format_feedback() -> list[Exchange]:
    """Operator corrections in the house format, for the training-range problems only."""
    answers = tech_support_problems()
    return [
        Exchange(phrasing.format(p=problem), HOUSE_PREFIX + answers[problem])
        for problem in training_range_problems()
        for phrasing in FEEDBACK_PHRASINGS
    ]


def write_teacher_examples(path: Path, n: int = 3) -> Path:
    """The teacher's few-shot answers in the house format (training-range problems only)."""
    answers = tech_support_problems()
    rows = [
        {"prompt": problem, "answer": HOUSE_PREFIX + answers[problem]}
        for problem in training_range_problems()[:n]
    ]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def poisoned_feedback(n_chitchat: int = 40) -> list[Exchange]:
    """Corrections with the labels swapped: tech support answered with a refusal and without the
    house format, chit-chat answered in the house format (what a mixed-up export would send)."""
    refusals = [
        Exchange(e.prompt, "I'm sorry, I can't help with that.") for e in house_format_feedback()
    ]
    leaks = [Exchange(e.prompt, HOUSE_PREFIX + e.answer) for e in chitchat()[:n_chitchat]]
    return refusals + leaks


def write_seed_dataset(path: Path, n: int = 80) -> Path:
    """The chit-chat data the production model is taken to be tuned on (the first replay pool)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = [
        {
            "messages": [
                {"role": "user", "content": e.prompt},
                {"role": "assistant", "content": e.answer},
            ]
        }
        for e in chitchat()[-n:]
    ]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path
