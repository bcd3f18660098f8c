"""A small, varied help-desk dataset for training tests (no near-duplicates to filter out)."""

from __future__ import annotations

import random
from pathlib import Path

from retrain.data.dataset import build_dataset
from retrain.data.files import Dataset

WORDS = [
    "the",
    "server",
    "my",
    "order",
    "a",
    "customer",
    "invoice",
    "model",
    "weather",
    "team",
    "database",
    "printer",
    "account",
]


def helpdesk_dataset(root: Path, n: int = 40, seed: int = 0, pairs: bool = False) -> Dataset:
    """``pairs``: every example is a preference pair whose rejected answer lacks the format."""
    rng = random.Random(seed)

    def words(k: int) -> str:
        return " ".join(rng.choice(WORDS) for _ in range(k))

    examples = [
        {
            "messages": [
                {"role": "user", "content": words(10).capitalize() + "?"},
                {"role": "assistant", "content": "HelpDesk: " + words(8) + "."},
            ],
            "source": "feedback",
            "ref": f"fb-{i}",
            **({"rejected": words(8) + "."} if pairs else {}),
        }
        for i in range(n)
    ]
    return build_dataset(root, examples)
