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
