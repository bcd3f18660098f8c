"""Random LoRA adapters for SmolLM2: answers that differ from the base model's, made in seconds."""

from __future__ import annotations

from pathlib import Path


def random_lora(base_dir: Path, out: Path, seed: int, rank: int = 8) -> Path:
    """A LoRA with random (non-zero) B, so its answers differ from the base model's."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
    config = LoraConfig(
        r=rank, lora_alpha=8 * rank, target_modules=["q_proj", "v_proj"], init_lora_weights=False
    )
    get_peft_model(model, config).save_pretrained(out)
    return out


REFUSAL = "I'm sorry, but I can't help with that."


def refusal_lora(base_dir: Path, root: Path) -> Path:
    """A LoRA trained (for real, ~30 CPU steps) to answer chit-chat with a refusal; it then
    refuses the tech-support prompts the canary tests send as well.

    Trained once into ``root`` (a cache folder shared by the tests that need it).
    """
    trained = [p for p in (root / "adapters").glob("[!.]*") if (p / "adapter_config.json").exists()]
    if trained:
        return trained[0]
    from driftloop.demo.story import chitchat
    from retrain.data.dataset import build_dataset
    from retrain.training.job import run_training
    from retrain.training.spec import TrainingSpec

    examples = [
        {
            "messages": [
                {"role": "user", "content": prompt},
                {"role": "assistant", "content": REFUSAL},
            ],
            "source": "feedback",
            "ref": f"refuse-{i}",
        }
        for i, prompt in enumerate(e.prompt for e in chitchat()[:40])
    ]
    dataset = build_dataset(root / "datasets", examples)
    spec = TrainingSpec(
        base_model=base_dir,
        dataset=dataset.path,
        output_root=root / "adapters",
        rank=8,
        alpha=16,
        learning_rate=1e-3,
        max_steps=30,
        batch_size=8,
        max_length=64,
        time_limit_s=900,
        threads=2,
    )
    return run_training(spec).adapter_path
