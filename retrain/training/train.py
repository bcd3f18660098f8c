"""The training subprocess: ``python -m retrain.training.train <spec.json>`` (LoRA SFT with PEFT + TRL).

It reads a TrainingSpec, verifies the dataset folder against its manifest, trains a LoRA
adapter with TRL's SFTTrainer on the CPU, and publishes the adapter atomically: files go to a
``.tmp-<pid>-*`` folder in the output root, are validated, and the folder is renamed to its
content digest. A kill at any point therefore leaves only a temp folder (removed by the next
run), never a complete-looking adapter. It never opens the database. Progress, phase changes,
errors and the final result are printed as ``@@driftloop-train {json}`` lines for the parent
(``retrain.training.job``).

Loss masking: a chat template with ``{% generation %}`` markers (the tiny test Llama) trains
on the assistant turns only (``assistant_only_loss``). Templates without them (SmolLM2's)
get each example as a conversational prompt/completion pair, so TRL's
``completion_only_loss`` trains on the final assistant turn only, with the same rendering the
model sees at inference.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
import traceback
from importlib import metadata
from pathlib import Path
from typing import Any

from monitor.fs import fsync_dir, new_temp_dir, publish
from retrain.data.files import load_dataset
from retrain.training.adapters import (
    CONFIG_FILE,
    CONTENT_FILES,
    LINEAGE_FILE,
    RESULT_FILE,
    adapter_digest,
    base_model_fingerprint,
    validate_adapter,
)
from retrain.training.job import EVENT_PREFIX, TrainingSpec


def emit(event: str, **fields: Any) -> None:
    """Print one event line for the parent."""
    print(EVENT_PREFIX + json.dumps({"event": event, **fields}), flush=True)


def _versions() -> dict[str, str]:
    found = {}
    for name in ("torch", "transformers", "peft", "trl", "datasets"):
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return found


def has_generation_markers(template: object) -> bool:
    """Tell whether a chat template marks assistant turns with {% generation %}."""
    from trl.chat_template_utils import has_generation_markers as trl_has_markers

    return isinstance(template, str | dict) and trl_has_markers(template)


def to_rows(records: list[dict[str, Any]], assistant_only: bool) -> list[dict[str, Any]]:
    """Shape dataset records for SFTTrainer (messages, or prompt/completion; see module doc)."""
    rows = []
    for record in records:
        messages = [{"role": m["role"], "content": m["content"]} for m in record["messages"]]
        if assistant_only:
            rows.append({"messages": messages})
        else:
            rows.append({"prompt": messages[:-1], "completion": messages[-1:]})
    return rows


def _progress_callback(started: float) -> Any:
    from transformers import TrainerCallback

    class ProgressCallback(TrainerCallback):
        """Prints a progress event for every logged training step."""

        def __init__(self) -> None:
            self.train_started = time.monotonic()
            self.last_loss: float | None = None

        def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            self.train_started = time.monotonic()
            emit("phase", phase="training", max_steps=state.max_steps)

        def on_log(self, args: Any, state: Any, control: Any, logs: Any = None, **kw: Any) -> None:
            if not logs or "loss" not in logs:
                return
            self.last_loss = float(logs["loss"])
            elapsed = time.monotonic() - self.train_started
            emit(
                "progress",
                phase="training",
                step=state.global_step,
                max_steps=state.max_steps,
                loss=self.last_loss,
                learning_rate=logs.get("learning_rate"),
                steps_per_second=round(state.global_step / elapsed, 4) if elapsed > 0 else None,
                elapsed_s=round(time.monotonic() - started, 3),
            )

    return ProgressCallback()


def _canonicalise_config(path: Path) -> None:
    """Rewrite adapter_config.json with sorted keys and target modules.

    PEFT keeps target_modules in a set, so their order in the file follows the hash seed;
    sorting makes two identical trainings produce byte-identical folders (one digest).
    """
    config = json.loads(path.read_text())
    if isinstance(config.get("target_modules"), list):
        config["target_modules"] = sorted(config["target_modules"])
    path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")


def train(spec: TrainingSpec) -> Path:
    """Train and publish the adapter; return its folder."""
    started = time.monotonic()
    if spec.niceness:
        os.nice(spec.niceness)
    emit("phase", phase="loading")
    import torch

    torch.set_num_threads(spec.threads)
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer, set_seed
    from trl import SFTConfig, SFTTrainer

    dataset = load_dataset(spec.dataset.parent, spec.dataset.name)
    set_seed(spec.seed)
    tokenizer = AutoTokenizer.from_pretrained(spec.base_model)
    assistant_only = has_generation_markers(tokenizer.chat_template)
    train_rows = to_rows(dataset.read("train"), assistant_only)
    validation_rows = to_rows(dataset.read("validation"), assistant_only)
    model = AutoModelForCausalLM.from_pretrained(spec.base_model, dtype=torch.float32)
    load_seconds = time.monotonic() - started

    work = new_temp_dir(spec.output_root)
    config = SFTConfig(
        output_dir=str(work / "trainer"),
        max_steps=spec.max_steps,
        per_device_train_batch_size=spec.batch_size,
        per_device_eval_batch_size=spec.batch_size,
        learning_rate=spec.learning_rate,
        seed=spec.seed,
        data_seed=spec.seed,
        max_length=spec.max_length,
        assistant_only_loss=assistant_only,
        completion_only_loss=None if assistant_only else True,
        use_cpu=True,
        bf16=False,
        fp16=False,
        gradient_checkpointing=False,
        report_to="none",
        logging_steps=1,
        save_strategy="no",
        eval_strategy="no",
        disable_tqdm=True,
        dataloader_num_workers=0,
    )
    lora = LoraConfig(
        r=spec.rank,
        lora_alpha=spec.alpha,
        lora_dropout=spec.dropout,
        target_modules=list(spec.target_modules),
        bias="none",
        task_type="CAUSAL_LM",
    )
    callback = _progress_callback(started)
    trainer = SFTTrainer(
        model=model,
        args=config,
        train_dataset=Dataset.from_list(train_rows),
        eval_dataset=Dataset.from_list(validation_rows),
        processing_class=tokenizer,
        peft_config=lora,
        callbacks=[callback],
    )
    # Examples that fill max_length were (probably) cut short: worth knowing when loss is odd.
    tokenized: Any = trainer.train_dataset
    at_max_length = sum(len(ids) >= spec.max_length for ids in tokenized["input_ids"])
    training_started = time.monotonic()
    output = trainer.train()
    train_seconds = time.monotonic() - training_started
    emit("phase", phase="evaluating")
    evaluation_started = time.monotonic()
    evaluation = trainer.evaluate()
    eval_seconds = time.monotonic() - evaluation_started

    emit("phase", phase="saving")
    adapter_dir = work / "adapter"
    trained: Any = trainer.model
    trained.save_pretrained(adapter_dir)
    # Only the files vLLM and PEFT read are kept; the generated model card is noise.
    for extra in adapter_dir.iterdir():
        if extra.name not in CONTENT_FILES:
            extra.unlink()
    _canonicalise_config(adapter_dir / CONFIG_FILE)
    loss_mode = "assistant_only" if assistant_only else "completion_only"
    lineage = {
        "format": 1,
        "base_model": {
            "path": str(spec.base_model),
            "fingerprint": base_model_fingerprint(spec.base_model),
        },
        "dataset": {"id": dataset.id, "files": dataset.manifest.get("files", {})},
        "training": {
            "rank": spec.rank,
            "alpha": spec.alpha,
            "dropout": spec.dropout,
            "target_modules": list(spec.target_modules),
            "learning_rate": spec.learning_rate,
            "max_steps": spec.max_steps,
            "batch_size": spec.batch_size,
            "max_length": spec.max_length,
            "seed": spec.seed,
            "loss": loss_mode,
        },
    }
    (adapter_dir / LINEAGE_FILE).write_text(json.dumps(lineage, indent=2, sort_keys=True) + "\n")
    digest = adapter_digest(adapter_dir)
    config_data = json.loads((adapter_dir / CONFIG_FILE).read_text())
    result = {
        "adapter_id": digest,
        "dataset_id": dataset.id,
        "base_model": str(spec.base_model),
        "rank": config_data.get("r"),
        "steps": int(output.global_step),
        "train_loss": float(output.training_loss),
        "final_loss": callback.last_loss,
        "eval_loss": evaluation.get("eval_loss"),
        "train_examples": len(train_rows),
        "validation_examples": len(validation_rows),
        "train_examples_at_max_length": int(at_max_length),
        "load_seconds": round(load_seconds, 3),
        "train_seconds": round(train_seconds, 3),
        "eval_seconds": round(eval_seconds, 3),
        "seconds_per_step": round(train_seconds / max(1, output.global_step), 4),
        "steps_per_second": round(output.global_step / train_seconds, 4),
        "total_seconds": round(time.monotonic() - started, 3),
        "threads": torch.get_num_threads(),
        "niceness": os.nice(0),
        "loss": loss_mode,
        "versions": _versions(),
    }
    (adapter_dir / RESULT_FILE).write_text(json.dumps(result, indent=2, sort_keys=True) + "\n")
    # The child checks its own output before publishing: a bad adapter never gets a real name.
    validate_adapter(adapter_dir, max_rank=spec.rank, base_model=spec.base_model)
    for path in adapter_dir.iterdir():
        with path.open("rb") as handle:
            os.fsync(handle.fileno())
        path.chmod(0o444)
    fsync_dir(adapter_dir)
    target = spec.output_root / digest
    if not publish(adapter_dir, target):
        emit("phase", phase="reused", adapter=str(target))
    shutil.rmtree(work, ignore_errors=True)
    return target


def main(argv: list[str] | None = None) -> int:
    """Entry point of the subprocess; returns the exit status."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m retrain.training.train <spec.json>", file=sys.stderr)
        return 2
    try:
        spec = TrainingSpec.from_json(Path(args[0]).read_text())
        target = train(spec)
    except Exception as exc:
        traceback.print_exc()
        emit("error", message=f"{type(exc).__name__}: {exc}")
        return 1
    emit("result", adapter=str(target), adapter_id=target.name)
    return 0


if __name__ == "__main__":
    sys.exit(main())
