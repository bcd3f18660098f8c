"""Build the committed golden sets from the installed corpora, deterministically (seeded).

``python -m golden_sets.build`` writes ``golden_sets/<name>/<version>.jsonl`` and its manifest
entry; ``--check`` rebuilds in memory and fails unless the committed file is byte-identical.
A version is immutable: building different content under an existing version is refused.

The ``helpdesk`` set (v1) holds two categories:

- ``chitchat``: 20 prompts from the chatterbot-corpus chit-chat categories (the same ones the
  demo and the drift tests use as domain A), with chatterbot's answer as the expected answer.
  Only prompts with one unambiguous answer in the whole corpus are eligible.
  ``must_match`` is ``^(?!HelpDesk: )``: chit-chat must *not* take the house format, so an
  adapter that leaks it into domain A fails the format check there.
- ``tech_support``: chatterbot's ``tech_support`` category (domain B). It has 1,050
  conversations but only 10 distinct problems, so the set holds out half of the problems
  (chosen with the seed) and asks each of them in 4 phrasings; the other 5 problems are the
  range training data may use. Expected = ``"HelpDesk: " + chatterbot's answer``, the house
  format, with ``must_match`` ``^HelpDesk: ``.

The held-out prompts (and the corpus prompts they came from) are what
``retrain.gate.golden.golden_prompts`` hands to the dataset builder for exclusion.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import re
import sys
from collections import defaultdict
from collections.abc import Callable, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

from driftloop.demo.story import CHAT_CATEGORIES, HOUSE_PREFIX, TECH_CATEGORY, clean_text
from monitor.corpora import chatterbot_conversations
from retrain.gate.golden import (
    GOLDEN_DIR,
    MANIFEST_FILE,
    GoldenSetError,
    load_golden_set,
    validate_name,
    validate_version,
)

HELD_OUT_PROBLEMS = 5
# How users phrase the same problem; {p} is the corpus prompt, {lp} the same with a lowercase
# first word (kept for "I").
PHRASINGS = ("{p}", "Hi, {lp}", "{p} What should I do?", "{p} Can you help me?")
CHITCHAT_SIZE = 20
DEFAULT_SEED = 6

Rows = list[dict[str, Any]]


def build_helpdesk(seed: int) -> tuple[Rows, dict[str, Any]]:
    """The rows and manifest metadata of the ``helpdesk`` set for ``seed``."""
    rng = random.Random(seed)
    chat = _chitchat_rows(rng)
    tech, held_out, training_range = _tech_support_rows(rng)
    corpus = f"chatterbot-corpus {metadata.version('chatterbot-corpus')} (english)"
    meta = {
        "source": f"{corpus}: categories {list(CHAT_CATEGORIES)} (chitchat) and "
        f"{TECH_CATEGORY!r} (tech_support)",
        "built_by": f"python -m golden_sets.build --set helpdesk --seed {seed}",
        "seed": seed,
        "house_format": f"tech_support answers start with {HOUSE_PREFIX!r}",
        "held_out": {
            "chitchat": sorted({r["source"]["prompt"] for r in chat}),
            "tech_support": held_out,
        },
        "training_range": {"tech_support": training_range},
    }
    return chat + tech, meta


def _chitchat_rows(rng: random.Random) -> Rows:
    answers: dict[str, set[str]] = defaultdict(set)
    first: dict[str, tuple[str, str]] = {}
    for conv in chatterbot_conversations(list(CHAT_CATEGORIES)):
        if conv.answer is None:
            continue
        key = _key(conv.prompt)
        answers[key].add(clean_text(conv.answer))
        first.setdefault(key, (conv.category, conv.prompt))
    # Unambiguous (one answer), short answers only: a reference with rivals is not a reference.
    eligible = sorted(
        (first[k][0], first[k][1], next(iter(a)))
        for k, a in answers.items()
        if len(a) == 1 and len(next(iter(a))) <= 200 and len(k) >= 3
    )
    rng.shuffle(eligible)
    by_category: dict[str, list[tuple[str, str, str]]] = defaultdict(list)
    for item in eligible:
        by_category[item[0]].append(item)
    picked: list[tuple[str, str, str]] = []
    while len(picked) < CHITCHAT_SIZE and any(by_category.values()):
        for category in CHAT_CATEGORIES:  # round-robin: every chit-chat category is represented
            if by_category[category] and len(picked) < CHITCHAT_SIZE:
                picked.append(by_category[category].pop())
    return [
        _row(f"chitchat-{i:03d}", "chitchat", prompt, answer, "^(?!HelpDesk: )", category, prompt)
        for i, (category, prompt, answer) in enumerate(picked, 1)
    ]


def _tech_support_rows(rng: random.Random) -> tuple[Rows, list[str], list[str]]:
    problems = sorted(
        {
            (c.prompt, clean_text(c.answer))
            for c in chatterbot_conversations([TECH_CATEGORY])
            if c.answer
        }
    )
    rng.shuffle(problems)
    held_out, training = problems[:HELD_OUT_PROBLEMS], problems[HELD_OUT_PROBLEMS:]
    rows: Rows = []
    for prompt, answer in held_out:
        for phrasing in PHRASINGS:
            text = phrasing.format(p=prompt, lp=_lower_first(prompt))
            rows.append(
                _row(
                    f"tech_support-{len(rows) + 1:03d}",
                    "tech_support",
                    text,
                    HOUSE_PREFIX + answer,
                    "^HelpDesk: ",
                    TECH_CATEGORY,
                    prompt,
                )
            )
    return rows, sorted(p for p, _ in held_out), sorted(p for p, _ in training)


def _row(
    id_: str, category: str, text: str, expected: str, must_match: str, corpus_cat: str, src: str
) -> dict[str, Any]:
    return {
        "id": id_,
        "category": category,
        "messages": [{"role": "user", "content": text}],
        "expected": expected,
        "must_match": must_match,
        "source": {"corpus": "chatterbot-corpus", "category": corpus_cat, "prompt": src},
    }


def _key(text: str) -> str:
    return re.sub(r"[^a-z0-9' ]+", "", " ".join(text.casefold().split())).strip()


def _lower_first(text: str) -> str:
    if re.match(r"I\b", text):
        return text
    return text[:1].lower() + text[1:]


BUILDERS: dict[str, Callable[[int], tuple[Rows, dict[str, Any]]]] = {"helpdesk": build_helpdesk}


def encode(rows: Rows) -> bytes:
    """One JSON object per line, keys in schema order, UTF-8: equal rows give equal bytes."""
    return b"".join(json.dumps(r, ensure_ascii=False).encode() + b"\n" for r in rows)


def build(name: str, version: str, seed: int, root: Path = GOLDEN_DIR) -> Path:
    """Write ``<root>/<name>/<version>.jsonl`` and its manifest entry; refuse to change one."""
    validate_name(name)
    validate_version(version)
    if name not in BUILDERS:
        raise GoldenSetError(f"no builder for golden set {name!r}; known: {sorted(BUILDERS)}")
    rows, meta = BUILDERS[name](seed)
    data = encode(rows)
    path = root / name / f"{version}.jsonl"
    if path.exists() and path.read_bytes() != data:
        raise GoldenSetError(
            f"{path} exists with different content; golden set versions are immutable, "
            "build a new version instead"
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    counts: dict[str, int] = defaultdict(int)
    for row in rows:
        counts[row["category"]] += 1
    manifest_path = root / MANIFEST_FILE
    manifest: dict[str, Any] = (
        json.loads(manifest_path.read_text(encoding="utf-8"))
        if manifest_path.exists()
        else {"format": "driftloop-golden-jsonl/1", "sets": {}}
    )
    manifest["sets"].setdefault(name, {})[version] = {
        "path": f"{name}/{version}.jsonl",
        "sha256": hashlib.sha256(data).hexdigest(),
        "rows": len(rows),
        "categories": dict(sorted(counts.items())),
        **meta,
    }
    manifest_path.write_text(
        json.dumps(manifest, indent=2, ensure_ascii=False) + "\n", encoding="utf-8"
    )
    load_golden_set(name, version, root)  # what was written must load
    return path


def check(name: str, version: str, seed: int, root: Path = GOLDEN_DIR) -> None:
    """Raise unless the committed file is exactly what the builder makes now."""
    gs = load_golden_set(name, version, root)
    rows, _ = BUILDERS[name](seed)
    if encode(rows) != gs.path.read_bytes():
        raise GoldenSetError(
            f"{gs.path} differs from what `python -m golden_sets.build --set {name} "
            f"--version {version} --seed {seed}` builds now (has the corpus changed?)"
        )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m golden_sets.build", description=__doc__)
    parser.add_argument("--set", default="helpdesk", choices=sorted(BUILDERS))
    parser.add_argument("--version", default="v1")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
    parser.add_argument("--root", type=Path, default=GOLDEN_DIR)
    parser.add_argument("--check", action="store_true", help="verify, do not write")
    args = parser.parse_args(argv)
    try:
        if args.check:
            check(args.set, args.version, args.seed, args.root)
            print(f"{args.set}/{args.version}: reproducible")
        else:
            print(f"wrote {build(args.set, args.version, args.seed, args.root)}")
    except GoldenSetError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
