"""DPO against SFT on the same preference data: does the house format take, at what cost?

``python -m benchmarks.training_methods [--steps 30]``

The data: chit-chat prompts of the installed corpus, each a pair whose chosen answer carries the
house format (``HelpDesk: <corpus answer>``) and whose rejected answer is the same text without
it. SFT learns the chosen answers; DPO learns to prefer them over the rejected ones. Both train a
rank-8 LoRA on SmolLM2-135M (the demo's base model) with the same steps, batch and learning rate;
the format rate is measured on held-out prompts (tech-support ones the training never saw, and
chit-chat ones left out of it), greedy, base model first as the baseline of the same run.
"""

from __future__ import annotations

import argparse
import re
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.train_speed import generate
from driftloop.demo.story import chitchat, tech_support_traffic
from retrain.data.dataset import build_dataset
from retrain.training.job import run_training
from retrain.training.spec import TrainingSpec

HOUSE_FORMAT = re.compile(r"^\s*HelpDesk:")
BASE_MODEL = Path(".cache/models/smollm2-135m-instruct")


def preference_examples(n: int) -> list[dict[str, Any]]:
    """``n`` chit-chat pairs: chosen ``HelpDesk: <answer>``, rejected the bare answer."""
    return [
        {
            "messages": [
                {"role": "user", "content": e.prompt},
                {"role": "assistant", "content": f"HelpDesk: {e.answer}"},
            ],
            "rejected": e.answer,
            "source": "feedback",
            "ref": f"pair-{i}",
        }
        for i, e in enumerate(chitchat()[:n])
    ]


def held_out_prompts(n_train: int, n: int) -> list[str]:
    """Prompts no training example holds: tech-support traffic and unused chit-chat."""
    half = n // 2
    unused = [e.prompt for e in chitchat()[n_train : n_train + n - half]]
    return sorted(set(tech_support_traffic(half * 3, seed=7)))[:half] + unused


def format_rate(base: Path, adapter: Path | None, prompts: list[str]) -> float:
    """Share of greedy answers (12 new tokens) that start in the house format."""
    answers = generate(base, adapter, prompts, max_new_tokens=12)
    return sum(bool(HOUSE_FORMAT.match(answer)) for answer in answers) / len(prompts)


def train(base: Path, root: Path, method: str, steps: int, n_pairs: int) -> Any:
    """One run of ``method`` on the preference set; returns the TrainingResult."""
    dataset = build_dataset(root / "datasets", preference_examples(n_pairs))
    spec = TrainingSpec(
        base_model=base,
        dataset=dataset.path,
        output_root=root / method,
        rank=8,
        alpha=16,
        learning_rate=1e-3,
        max_steps=steps,
        batch_size=8,
        max_length=64,
        time_limit_s=1800,
        threads=2,
        niceness=0,
        method=method,
    )
    return run_training(spec)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--pairs", type=int, default=40)
    parser.add_argument("--held-out", type=int, default=20)
    args = parser.parse_args()
    base = BASE_MODEL.absolute()
    prompts = held_out_prompts(args.pairs, args.held_out)
    rows = [("base (no adapter)", format_rate(base, None, prompts), 0, 0.0)]
    with tempfile.TemporaryDirectory(prefix="driftloop-methods-") as scratch:
        for method in ("sft", "dpo"):
            started = time.monotonic()
            result = train(base, Path(scratch), method, args.steps, args.pairs)
            seconds = time.monotonic() - started
            rate = format_rate(base, result.adapter_path, prompts)
            rows.append((method, rate, result.steps, seconds))
            print(f"{method}: {result.steps} steps in {seconds:.1f} s, format rate {rate:.2f}")
    print(f"\n{len(prompts)} held-out prompts, {args.pairs} pairs, SmolLM2-135M, rank 8, 2 threads")
    print(f"{'method':<20}{'format rate':>12}{'steps':>7}{'seconds':>9}")
    for name, rate, steps, seconds in rows:
        print(f"{name:<20}{rate:>12.2f}{steps:>7}{seconds:>9.1f}")
    sft, dpo = rows[1], rows[2]
    print(
        f"dpo / sft: format rate {dpo[1] / max(sft[1], 1e-9):.2f}x, seconds {dpo[3] / sft[3]:.2f}x"
    )


if __name__ == "__main__":
    main()
