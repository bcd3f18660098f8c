"""Build the shipped calibration and anchor sets from real text whose labels are known by construction.

Source: the English trivia questions of chatterbot-corpus 1.3.3 (factual question, short answer).
Each chosen question appears twice: with its own corpus answer (label 5: answers exactly what was
asked) and with the answer to a different trivia question (label 1: answers a different
question). The two sets use disjoint questions. Regenerate with
``python -m judges.labelled`` (deterministic; a test checks the shipped files match).
"""

from __future__ import annotations

import random

from judges.examples import ANCHOR_SET, CALIBRATION_SET, Example
from judges.reference import normalize
from monitor.corpora import chatterbot_conversations

SEED = 20261123
CALIBRATION_QUESTIONS = 40
ANCHOR_QUESTIONS = 10


def trivia_pairs(questions: int, skip: int, seed: int = SEED) -> list[Example]:
    """``questions`` trivia questions (after skipping ``skip`` in the shuffled order), each twice."""
    pool = [c for c in chatterbot_conversations(["trivia"]) if c.answer and c.prompt]
    seen: set[str] = set()
    unique = []
    for c in pool:  # repeated questions or answers would blur the "other question" label
        key_q, key_a = normalize(c.prompt), normalize(c.answer or "")
        if key_q in seen or key_a in seen or not key_a:
            continue
        seen.update((key_q, key_a))
        unique.append(c)
    rng = random.Random(seed)
    rng.shuffle(unique)
    chosen = unique[skip : skip + questions]
    if len(chosen) < questions:
        raise ValueError(f"only {len(chosen)} trivia questions left after skipping {skip}")
    out = []
    half = len(chosen) // 2
    for i, conv in enumerate(chosen):
        # Rotating by half the list pairs every question with a different question's answer.
        other = chosen[(i + half) % len(chosen)]
        base = f"trivia-{skip + i:03d}"
        out.append(
            Example(
                f"{base}-match",
                conv.prompt,
                conv.answer or "",
                5,
                "chatterbot-corpus trivia: the corpus answer to this question",
            )
        )
        out.append(
            Example(
                f"{base}-other",
                conv.prompt,
                other.answer or "",
                1,
                f"chatterbot-corpus trivia: the answer to another question ({other.prompt!r})",
            )
        )
    return out


def calibration_examples() -> list[Example]:
    return trivia_pairs(CALIBRATION_QUESTIONS, skip=0)


def anchor_examples() -> list[Example]:
    return trivia_pairs(ANCHOR_QUESTIONS, skip=CALIBRATION_QUESTIONS)


def render(examples: list[Example]) -> str:
    return "".join(example.to_json() + "\n" for example in examples)


def main() -> None:
    CALIBRATION_SET.parent.mkdir(parents=True, exist_ok=True)
    CALIBRATION_SET.write_text(render(calibration_examples()), encoding="utf-8")
    ANCHOR_SET.write_text(render(anchor_examples()), encoding="utf-8")
    print(f"wrote {CALIBRATION_SET} and {ANCHOR_SET}")


if __name__ == "__main__":
    main()
