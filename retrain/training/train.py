"""The training subprocess: ``python -m retrain.training.train <spec.json>`` (LoRA with PEFT + TRL).

It reads a TrainingSpec, verifies the dataset folder against its manifest, trains a LoRA
adapter on the CPU with TRL's SFTTrainer (``method = "sft"``) or DPOTrainer (``"dpo"``), and
publishes the adapter atomically: files go to a
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

DPO trains on the dataset's preference pairs only (examples with a ``rejected`` answer; the
others are counted and left out), as conversational prompt/chosen/rejected rows. Its reference
model is the base model (TRL computes it with the LoRA disabled), or, with
``reference_adapter``, the production adapter: the new adapter starts as a copy of it and TRL
keeps a frozen copy as the reference, so DPO moves away from what production serves.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
import traceback
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from monitor.fs import fsync_dir, new_temp_dir, publish
from retrain.data.files import Dataset, load_dataset
from retrain.training.adapters import (
    CONFIG_FILE,
    CONTENT_FILES,
    LINEAGE_FILE,
    RESULT_FILE,
    adapter_digest,
    base_model_fingerprint,
    validate_adapter,
)
from retrain.training.parent_death import die_with_parent
from retrain.training.spec import EVENT_PREFIX, TrainingSpec


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


def to_preference_rows(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Shape the preference pairs among dataset records for DPOTrainer; others are skipped.

    >>> to_preference_rows([
    ...     {"messages": [{"role": "user", "content": "Hi"},
    ...                   {"role": "assistant", "content": "HelpDesk: hi"}], "rejected": "hi"},
    ...     {"messages": [{"role": "user", "content": "Yo"},
    ...                   {"role": "assistant", "content": "HelpDesk: yo"}]},
    ... ])  # doctest: +NORMALIZE_WHITESPACE
    [{'prompt': [{'role': 'user', 'content': 'Hi'}],
      'chosen': [{'role': 'assistant', 'content': 'HelpDesk: hi'}],
      'rejected': [{'role': 'assistant', 'content': 'hi'}]}]
    """
    rows = []
    for record in records:
        if record.get("rejected") is None:
            continue
        messages = [{"role": m["role"], "content": m["content"]} for m in record["messages"]]
        rejected = [{"role": "assistant", "content": record["rejected"]}]
        rows.append({"prompt": messages[:-1], "chosen": messages[-1:], "rejected": rejected})
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


@dataclass(frozen=True)
class _Inputs:
    """The loaded dataset, tokenizer and model, shaped for the spec's trainer."""

    dataset: Dataset
    tokenizer: Any
    model: Any  # the base model, or for a DPO run from production, a PeftModel of it
    assistant_only: bool
    train_rows: list[dict[str, Any]]
    validation_rows: list[dict[str, Any]]
    method: str
    skipped_without_pair: int = 0  # DPO: train examples that are not preference pairs

    @property
    def loss_mode(self) -> str:
        if self.method == "dpo":
            return "dpo_sigmoid"
        return "assistant_only" if self.assistant_only else "completion_only"


@dataclass(frozen=True)
class _Fit:
    """What training and evaluation returned, with their timings."""

    output: Any  # transformers' TrainOutput
    evaluation: dict[str, Any]
    final_loss: float | None
    at_max_length: int
    train_seconds: float
    eval_seconds: float


def _prepare_process(spec: TrainingSpec) -> None:
    """Lower the child's priority and bound torch's threads, so serving keeps the CPU."""
    if spec.niceness:
        os.nice(spec.niceness)
    emit("phase", phase="loading")
    import torch

    torch.set_num_threads(spec.threads)


def _import_training_stack() -> None:
    """Import the training libraries up front: a missing one fails first, and load time counts it."""
    import datasets  # noqa: F401
    import peft  # noqa: F401
    from transformers import AutoModelForCausalLM, AutoTokenizer, set_seed  # noqa: F401
    from trl import DPOConfig, DPOTrainer, SFTConfig, SFTTrainer  # noqa: F401


def _load_inputs(spec: TrainingSpec) -> _Inputs:
    """Verify and read the dataset, then load the tokenizer and base model (seeded)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, set_seed

    dataset = load_dataset(spec.dataset.parent, spec.dataset.name)
    set_seed(spec.seed)
    tokenizer = AutoTokenizer.from_pretrained(spec.base_model)
    assistant_only = has_generation_markers(tokenizer.chat_template)
    train, validation = dataset.read("train"), dataset.read("validation")
    if spec.method == "dpo":
        train_rows, validation_rows = to_preference_rows(train), to_preference_rows(validation)
        if not train_rows:
            raise ValueError(
                f"method dpo: dataset {dataset.id} has no preference pairs in its train split"
                f" ({len(train)} examples, none with a rejected answer)"
            )
    else:
        train_rows = to_rows(train, assistant_only)
        validation_rows = to_rows(validation, assistant_only)
    model = AutoModelForCausalLM.from_pretrained(spec.base_model, dtype=torch.float32)
    if spec.reference_adapter is not None:
        model = _from_reference_adapter(model, spec)
    return _Inputs(
        dataset,
        tokenizer,
        model,
        assistant_only,
        train_rows,
        validation_rows,
        spec.method,
        skipped_without_pair=len(train) - len(train_rows),
    )


def _from_reference_adapter(model: Any, spec: TrainingSpec) -> Any:
    """The base model with the production adapter, trainable: DPO's starting point."""
    from peft import PeftModel

    assert spec.reference_adapter is not None
    info = validate_adapter(spec.reference_adapter, max_rank=spec.rank, base_model=spec.base_model)
    if info.rank != spec.rank:
        raise ValueError(
            f"reference adapter {spec.reference_adapter.name} has rank {info.rank}, the run"
            f" asks for {spec.rank}: a DPO run from production keeps production's rank"
        )
    return PeftModel.from_pretrained(model, spec.reference_adapter, is_trainable=True)


def _common_args(spec: TrainingSpec, work: Path) -> dict[str, Any]:
    """Trainer arguments of both methods: CPU only, log every step, no checkpoints or evals."""
    return {
        "output_dir": str(work / "trainer"),
        "max_steps": spec.max_steps,
        "per_device_train_batch_size": spec.batch_size,
        "per_device_eval_batch_size": spec.batch_size,
        "learning_rate": spec.learning_rate,
        "seed": spec.seed,
        "data_seed": spec.seed,
        "max_length": spec.max_length,
        "use_cpu": True,
        "bf16": False,
        "fp16": False,
        "gradient_checkpointing": False,
        "report_to": "none",
        "logging_steps": 1,
        "save_strategy": "no",
        "eval_strategy": "no",
        "disable_tqdm": True,
        "dataloader_num_workers": 0,
    }


def _sft_config(spec: TrainingSpec, work: Path, assistant_only: bool) -> Any:
    """Return TRL's SFTConfig, with the loss masking the chat template allows."""
    from trl import SFTConfig

    return SFTConfig(
        **_common_args(spec, work),
        assistant_only_loss=assistant_only,
        completion_only_loss=None if assistant_only else True,
    )


def _dpo_config(spec: TrainingSpec, work: Path) -> Any:
    """Return TRL's DPOConfig: the sigmoid (original DPO) loss at the spec's beta."""
    from trl import DPOConfig

    return DPOConfig(**_common_args(spec, work), beta=spec.dpo_beta)


def _lora_config(spec: TrainingSpec) -> Any:
    """Return PEFT's LoraConfig for the spec's rank, alpha, dropout and target modules."""
    from peft import LoraConfig

    return LoraConfig(
        r=spec.rank,
        lora_alpha=spec.alpha,
        lora_dropout=spec.dropout,
        target_modules=list(spec.target_modules),
        bias="none",
        task_type="CAUSAL_LM",
    )


def _trainer(spec: TrainingSpec, inputs: _Inputs, work: Path, callback: Any) -> Any:
    """TRL's SFTTrainer or DPOTrainer for the spec, with a fresh LoRA unless one is loaded."""
    from datasets import Dataset as HFDataset
    from trl import DPOTrainer, SFTTrainer

    common = {
        "model": inputs.model,
        "train_dataset": HFDataset.from_list(inputs.train_rows),
        "eval_dataset": HFDataset.from_list(inputs.validation_rows)
        if inputs.validation_rows
        else None,
        "processing_class": inputs.tokenizer,
        "peft_config": None if spec.reference_adapter is not None else _lora_config(spec),
        "callbacks": [callback],
    }
    if spec.method == "dpo":
        # ref_model None: TRL's reference is the model without the LoRA being trained
        return DPOTrainer(ref_model=None, args=_dpo_config(spec, work), **common)
    return SFTTrainer(args=_sft_config(spec, work, inputs.assistant_only), **common)


def _at_max_length(tokenized: Any, max_length: int) -> int:
    """Examples that fill max_length were (probably) cut short: worth knowing when loss is odd."""
    if "input_ids" in tokenized.column_names:  # SFT
        return sum(len(ids) >= max_length for ids in tokenized["input_ids"])
    columns = (tokenized[name] for name in ("prompt_ids", "chosen_ids", "rejected_ids"))
    lengths = zip(*columns, strict=True)
    return sum(len(p) + max(len(c), len(r)) >= max_length for p, c, r in lengths)


def _fit(spec: TrainingSpec, inputs: _Inputs, work: Path, started: float) -> tuple[Any, _Fit]:
    """Build the trainer, train and evaluate; return the trainer and what it reported."""
    callback = _progress_callback(started)
    trainer = _trainer(spec, inputs, work, callback)
    at_max_length = _at_max_length(trainer.train_dataset, spec.max_length)
    training_started = time.monotonic()
    output = trainer.train()
    train_seconds = time.monotonic() - training_started
    emit("phase", phase="evaluating")
    evaluation_started = time.monotonic()
    # a DPO run may have no validation pairs: then there is nothing to evaluate
    evaluation = trainer.evaluate() if inputs.validation_rows else {}
    eval_seconds = time.monotonic() - evaluation_started
    fit = _Fit(
        output=output,
        evaluation=evaluation,
        final_loss=callback.last_loss,
        at_max_length=int(at_max_length),
        train_seconds=train_seconds,
        eval_seconds=eval_seconds,
    )
    return trainer, fit


def _save_adapter(trainer: Any, adapter_dir: Path) -> None:
    """Save the LoRA weights and config, keeping only the files vLLM and PEFT read."""
    trained: Any = trainer.model
    # only the trained adapter: a DPO run from production also holds TRL's frozen "ref" copy
    trained.save_pretrained(adapter_dir, selected_adapters=["default"])
    # The generated model card is noise.
    for extra in adapter_dir.iterdir():
        if extra.name not in CONTENT_FILES:
            extra.unlink()
    _canonicalise_config(adapter_dir / CONFIG_FILE)


def _lineage(spec: TrainingSpec, inputs: _Inputs) -> dict[str, Any]:
    """Return lineage.json: the base model, dataset and hyperparameters the adapter came from."""
    return {
        "format": 1,
        "base_model": {
            "path": str(spec.base_model),
            "fingerprint": base_model_fingerprint(spec.base_model),
        },
        "dataset": {"id": inputs.dataset.id, "files": inputs.dataset.manifest.get("files", {})},
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
            "loss": inputs.loss_mode,
            "method": spec.method,
            **_dpo_lineage(spec),
        },
    }


def _dpo_lineage(spec: TrainingSpec) -> dict[str, Any]:
    if spec.method != "dpo":
        return {}
    reference = spec.reference_adapter
    return {"dpo_beta": spec.dpo_beta, "reference": reference.name if reference else "base"}


def _result(
    spec: TrainingSpec,
    inputs: _Inputs,
    fit: _Fit,
    adapter_dir: Path,
    digest: str,
    load_seconds: float,
    started: float,
) -> dict[str, Any]:
    """Return result.json: the adapter's id, losses, example counts, timings and versions."""
    import torch

    config_data = json.loads((adapter_dir / CONFIG_FILE).read_text())
    output = fit.output
    return {
        "adapter_id": digest,
        "dataset_id": inputs.dataset.id,
        "base_model": str(spec.base_model),
        "rank": config_data.get("r"),
        "steps": int(output.global_step),
        "train_loss": float(output.training_loss),
        "final_loss": fit.final_loss,
        "eval_loss": fit.evaluation.get("eval_loss"),
        "train_examples": len(inputs.train_rows),
        "validation_examples": len(inputs.validation_rows),
        "train_examples_at_max_length": fit.at_max_length,
        "load_seconds": round(load_seconds, 3),
        "train_seconds": round(fit.train_seconds, 3),
        "eval_seconds": round(fit.eval_seconds, 3),
        "seconds_per_step": round(fit.train_seconds / max(1, output.global_step), 4),
        "steps_per_second": round(output.global_step / fit.train_seconds, 4),
        "total_seconds": round(time.monotonic() - started, 3),
        "threads": torch.get_num_threads(),
        "niceness": os.nice(0),
        "loss": inputs.loss_mode,
        "method": spec.method,
        "train_examples_without_pair": inputs.skipped_without_pair,
        **{k: v for k, v in fit.evaluation.items() if k.startswith("eval_rewards/")},
        "versions": _versions(),
    }


def _write_json(path: Path, data: dict[str, Any]) -> None:
    """Write ``data`` as indented JSON with sorted keys, so equal data gives equal bytes."""
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")


def _seal(adapter_dir: Path) -> None:
    """Fsync every file and the folder and make the files read-only, before publishing."""
    for path in adapter_dir.iterdir():
        with path.open("rb") as handle:
            os.fsync(handle.fileno())
        path.chmod(0o444)
    fsync_dir(adapter_dir)


def train(spec: TrainingSpec) -> Path:
    """Train and publish the adapter; return its folder."""
    started = time.monotonic()
    _prepare_process(spec)
    _import_training_stack()
    inputs = _load_inputs(spec)
    load_seconds = time.monotonic() - started

    work = new_temp_dir(spec.output_root)
    trainer, fit = _fit(spec, inputs, work, started)

    emit("phase", phase="saving")
    adapter_dir = work / "adapter"
    _save_adapter(trainer, adapter_dir)
    _write_json(adapter_dir / LINEAGE_FILE, _lineage(spec, inputs))
    digest = adapter_digest(adapter_dir)
    result = _result(spec, inputs, fit, adapter_dir, digest, load_seconds, started)
    _write_json(adapter_dir / RESULT_FILE, result)
    # The child checks its own output before publishing: a bad adapter never gets a real name.
    validate_adapter(adapter_dir, max_rank=spec.rank, base_model=spec.base_model)
    _seal(adapter_dir)
    target = spec.output_root / digest
    if not publish(adapter_dir, target):
        emit("phase", phase="reused", adapter=str(target))
    shutil.rmtree(work, ignore_errors=True)
    return target


def main(argv: list[str] | None = None) -> int:
    """Entry point of the subprocess; returns the exit status."""
    die_with_parent()
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
