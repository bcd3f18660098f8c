"""A DPO run on SmolLM2 (the demo's base model) learns the house format from preference pairs.

The pairs and the measurement are ``benchmarks/training_methods.py``'s (which also runs SFT on
the same data): chosen answers carry ``HelpDesk:``, rejected ones do not; the format rate is
measured greedy on prompts no pair holds, the base model first.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks.training_methods import format_rate, held_out_prompts, train

pytestmark = pytest.mark.slow

PAIRS = 40
STEPS = 30


def test_dpo_raises_the_house_format_rate_on_held_out_prompts(
    smollm2_dir: Path, tmp_path: Path
) -> None:
    prompts = held_out_prompts(PAIRS, 10)
    before = format_rate(smollm2_dir, None, prompts)
    result = train(smollm2_dir, tmp_path, "dpo", steps=STEPS, n_pairs=PAIRS)
    assert result.metrics["method"] == "dpo"
    assert result.metrics["train_examples_without_pair"] == 0
    after = format_rate(smollm2_dir, result.adapter_path, prompts)
    assert after >= before + 0.5, (before, after)
