"""Tests for LoRA training in a subprocess (retrain.training.job, retrain.training.train) and adapters.

Training runs for real: the tiny Llama from retrain.training.base_models, a dataset from
retrain.data.dataset, ``python -m retrain.training.train`` as a child process group.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from retrain.data.files import Dataset
from retrain.training.adapters import (
    CONFIG_FILE,
    LINEAGE_FILE,
    RESULT_FILE,
    WEIGHTS_FILE,
    AdapterError,
    adapter_digest,
    validate_adapter,
)
from retrain.training.base_models import TINY_CHAT_TEMPLATE, build_tiny_llama
from retrain.training.job import (
    TrainingCancelledError,
    TrainingError,
    TrainingLimits,
    TrainingProgress,
    TrainingSpec,
    TrainingTimeoutError,
    child_environment,
    run_training,
)
from retrain.training.parent_death import PARENT_PID_ENV
from retrain.training.train import has_generation_markers, to_rows
from tests.retrain.processes import running
from tests.retrain.training_data import helpdesk_dataset

REPO_ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.slow


@pytest.fixture(scope="session")
def tiny_base_without_markers(tiny_base: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny Llama with a ChatML template lacking {% generation %}, like SmolLM2's."""
    copy = tmp_path_factory.mktemp("models") / "tiny-plain"
    shutil.copytree(tiny_base, copy)
    plain = TINY_CHAT_TEMPLATE.replace("{% generation %}", "").replace("{% endgeneration %}", "")
    (copy / "chat_template.jinja").write_text(plain)
    return copy


@pytest.fixture(scope="session")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Dataset:
    return helpdesk_dataset(tmp_path_factory.mktemp("datasets"))


def spec_for(base: Path, dataset: Dataset, out: Path, **overrides: Any) -> TrainingSpec:
    values: dict[str, Any] = {
        "base_model": base,
        "dataset": dataset.path,
        "output_root": out,
        "max_steps": 4,
        "batch_size": 4,
        "max_length": 64,
        "learning_rate": 1e-3,
        "time_limit_s": 240,
    }
    values.update(overrides)
    return TrainingSpec(**values)


def complete_looking(root: Path) -> list[Path]:
    """Folders in ``root`` that carry a final (non-temp) name."""
    return [p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")]


@pytest.fixture(scope="session")
def trained(tiny_base: Path, dataset: Dataset, tmp_path_factory: pytest.TempPathFactory) -> Any:
    out = tmp_path_factory.mktemp("adapters")
    progress: list[TrainingProgress] = []
    result = run_training(spec_for(tiny_base, dataset, out), on_progress=progress.append)
    return result, progress, out


# --- end to end ----------------------------------------------------------------------------


def test_dpo_trains_on_pairs_and_from_a_reference_adapter(
    tiny_base: Path, trained: Any, tmp_path: Path
) -> None:
    """DPO on the base, then DPO starting from a production adapter (kept as its reference)."""
    pairs = helpdesk_dataset(tmp_path / "datasets", n=12, pairs=True)
    out = tmp_path / "adapters"
    base_run = run_training(spec_for(tiny_base, pairs, out, method="dpo", max_steps=2))
    assert base_run.metrics["method"] == "dpo" and base_run.steps == 2
    lineage = json.loads((base_run.adapter_path / LINEAGE_FILE).read_text())["training"]
    assert lineage["reference"] == "base" and lineage["loss"] == "dpo_sigmoid"
    production = trained[0].adapter_path
    from_production = run_training(
        spec_for(tiny_base, pairs, out, method="dpo", max_steps=2, reference_adapter=production)
    )
    lineage = json.loads((from_production.adapter_path / LINEAGE_FILE).read_text())["training"]
    assert lineage["reference"] == production.name
    # only the trained adapter is saved, not TRL's frozen "ref" copy of production
    assert sorted(p.name for p in from_production.adapter_path.iterdir() if p.is_dir()) == []
    validate_adapter(from_production.adapter_path, max_rank=8, base_model=tiny_base)


def test_dpo_without_pairs_is_refused_by_name(
    tiny_base: Path, dataset: Dataset, tmp_path: Path
) -> None:
    with pytest.raises(TrainingError, match="no preference pairs"):
        run_training(spec_for(tiny_base, dataset, tmp_path, method="dpo"))


def test_training_publishes_a_content_addressed_adapter(trained: Any, tiny_base: Path) -> None:
    result, _, out = trained
    assert result.adapter_path.parent == out
    assert result.adapter_path.name == adapter_digest(result.adapter_path) == result.adapter.id
    assert sorted(p.name for p in result.adapter_path.iterdir()) == sorted(
        [CONFIG_FILE, WEIGHTS_FILE, LINEAGE_FILE, RESULT_FILE]
    )
    assert complete_looking(out) == [result.adapter_path]
    assert [p.name for p in out.iterdir() if p.name.startswith(".tmp-")] == []
    info = validate_adapter(result.adapter_path, max_rank=8, base_model=tiny_base)
    assert info.rank == 8 and info.target_modules == ("q_proj", "v_proj")


def test_training_reports_metrics_and_progress(trained: Any, dataset: Dataset) -> None:
    result, progress, _ = trained
    assert result.steps == 4
    for loss in (result.train_loss, result.final_loss, result.eval_loss):
        assert isinstance(loss, float) and loss > 0
    assert result.train_seconds > 0 and result.wall_seconds >= result.train_seconds
    metrics = result.metrics
    assert metrics["dataset_id"] == dataset.id
    assert metrics["loss"] == "assistant_only"
    assert metrics["threads"] == 1 and metrics["niceness"] >= 10
    assert metrics["train_examples"] == len(dataset.read("train"))
    assert 0 <= metrics["train_examples_at_max_length"] <= metrics["train_examples"]
    steps = [p for p in progress if p.phase == "training" and p.step]
    assert [p.step for p in steps] == [1, 2, 3, 4]
    assert all(p.max_steps == 4 and p.loss is not None and p.steps_per_second for p in steps)
    assert [p.phase for p in progress if not p.step][:2] == ["loading", "training"]
    lineage = json.loads((result.adapter_path / LINEAGE_FILE).read_text())
    assert lineage["dataset"]["id"] == dataset.id


def test_same_spec_gives_the_same_adapter_folder(
    trained: Any, tiny_base: Path, dataset: Dataset
) -> None:
    result, _, out = trained
    again = run_training(spec_for(tiny_base, dataset, out))
    assert again.adapter_path == result.adapter_path
    assert complete_looking(out) == [result.adapter_path]


def test_adapter_loads_with_peft_and_changes_the_output(trained: Any, tiny_base: Path) -> None:
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    result, _, _ = trained
    ids = torch.tensor([[1, 5, 9, 42, 7]])
    base = AutoModelForCausalLM.from_pretrained(tiny_base)
    with torch.no_grad():
        before = base(ids).logits
    model = PeftModel.from_pretrained(base, result.adapter_path)
    with torch.no_grad():
        after = model(ids).logits
    assert not torch.allclose(before, after)


def test_template_without_generation_markers_trains_on_completions(
    tiny_base_without_markers: Path, dataset: Dataset, tmp_path: Path
) -> None:
    spec = spec_for(tiny_base_without_markers, dataset, tmp_path, max_steps=2)
    result = run_training(spec)
    assert result.metrics["loss"] == "completion_only"
    assert result.steps == 2


def test_loss_mode_detection_and_row_shapes(
    tiny_base: Path, tiny_base_without_markers: Path
) -> None:
    from transformers import AutoTokenizer

    assert has_generation_markers(AutoTokenizer.from_pretrained(tiny_base).chat_template)
    plain = AutoTokenizer.from_pretrained(tiny_base_without_markers).chat_template
    assert not has_generation_markers(plain)
    record = {
        "messages": [
            {"role": "system", "content": "s"},
            {"role": "user", "content": "u"},
            {"role": "assistant", "content": "a"},
        ]
    }
    assert to_rows([record], True) == [{"messages": record["messages"]}]
    assert to_rows([record], False) == [
        {"prompt": record["messages"][:2], "completion": record["messages"][2:]}
    ]


# --- failures ------------------------------------------------------------------------------


def test_time_limit_kills_the_process_group(
    tiny_base: Path, dataset: Dataset, tmp_path: Path
) -> None:
    seen: list[TrainingProgress] = []
    spec = spec_for(tiny_base, dataset, tmp_path, max_steps=2000, time_limit_s=12)
    with pytest.raises(TrainingTimeoutError, match="time limit of 12 s") as info:
        run_training(spec, on_progress=seen.append)
    assert info.value.exit_code == -signal.SIGKILL
    assert info.value.pid is not None and all(p.pid == info.value.pid for p in seen)
    with pytest.raises(ProcessLookupError):
        os.kill(info.value.pid, 0)
    assert list(tmp_path.iterdir()) == []


def test_kill_9_mid_training_leaves_no_adapter(
    tiny_base: Path, dataset: Dataset, tmp_path: Path
) -> None:
    killed: list[int] = []

    def kill_at_step_3(progress: TrainingProgress) -> None:
        if progress.step == 3 and not killed:
            # The temp folder exists while training runs; nothing has a final name yet.
            assert [p.name[:5] for p in tmp_path.iterdir()] == [".tmp-"]
            os.kill(progress.pid, signal.SIGKILL)
            killed.append(progress.pid)

    spec = spec_for(tiny_base, dataset, tmp_path, max_steps=500)
    with pytest.raises(TrainingError) as info:
        run_training(spec, on_progress=kill_at_step_3)
    assert killed
    assert info.value.exit_code == -signal.SIGKILL
    assert "killed by SIGKILL" in str(info.value)
    assert info.value.last_lines is not None
    assert complete_looking(tmp_path) == []
    assert list(tmp_path.iterdir()) == []


def test_leftover_temp_dirs_are_cleaned_on_the_next_run(
    tiny_base: Path, dataset: Dataset, tmp_path: Path
) -> None:
    import subprocess
    import sys

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    leftover = tmp_path / f".tmp-{dead.pid}-deadbeef"
    (leftover / "adapter").mkdir(parents=True)
    (leftover / "adapter" / CONFIG_FILE).write_text("{}")
    result = run_training(spec_for(tiny_base, dataset, tmp_path, max_steps=1))
    assert not leftover.exists()
    assert complete_looking(tmp_path) == [result.adapter_path]


def test_cancel_kills_the_child(tiny_base: Path, dataset: Dataset, tmp_path: Path) -> None:
    cancel = threading.Event()

    def cancel_at_step_2(progress: TrainingProgress) -> None:
        if progress.step >= 2:
            cancel.set()

    spec = spec_for(tiny_base, dataset, tmp_path, max_steps=500)
    with pytest.raises(TrainingCancelledError):
        run_training(spec, on_progress=cancel_at_step_2, cancel=cancel)
    assert list(tmp_path.iterdir()) == []


def test_child_failure_names_the_cause(tiny_base: Path, dataset: Dataset, tmp_path: Path) -> None:
    spec = spec_for(tiny_base, dataset, tmp_path, target_modules=("no_such_proj",))
    with pytest.raises(
        TrainingError, match=r"exit code 1\): \w+Error: Target modules .*no_such_proj"
    ) as info:
        run_training(spec)
    assert info.value.exit_code == 1
    assert any("Traceback" in line or "no_such_proj" in line for line in info.value.last_lines)
    assert complete_looking(tmp_path) == []


def test_corrupt_dataset_is_refused_by_the_child(
    tiny_base: Path, dataset: Dataset, tmp_path: Path
) -> None:
    copy = tmp_path / "datasets" / dataset.id
    shutil.copytree(dataset.path, copy)
    (copy / "train.jsonl").chmod(0o644)
    (copy / "train.jsonl").write_text('{"messages": []}\n')
    spec = dataclasses.replace(spec_for(tiny_base, dataset, tmp_path / "out"), dataset=copy)
    with pytest.raises(TrainingError, match="does not match its manifest sha256"):
        run_training(spec)


# --- spec and limits -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "value", "cap"),
    [("learning_rate", 0.5, "1e-03|0.001"), ("max_steps", 5000, "2000"), ("rank", 128, "64")],
)
def test_limits_reject_a_spec_above_the_caps(
    tiny_base: Path, dataset: Dataset, tmp_path: Path, field: str, value: Any, cap: str
) -> None:
    spec = spec_for(tiny_base, dataset, tmp_path, **{field: value})
    with pytest.raises(
        TrainingError, match=rf"TrainingSpec\.{field}={value} exceeds the configured cap ({cap})"
    ):
        run_training(spec)
    assert not tmp_path.exists() or list(tmp_path.iterdir()) == []


def test_configured_caps_apply(tiny_base: Path, dataset: Dataset, tmp_path: Path) -> None:
    spec = spec_for(tiny_base, dataset, tmp_path, learning_rate=5e-4)
    with pytest.raises(TrainingError, match="learning_rate"):
        run_training(spec, limits=TrainingLimits(max_learning_rate=1e-4))


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("rank", 0),
        ("batch_size", -1),
        ("learning_rate", 0.0),
        ("niceness", 40),
        ("time_limit_s", float("nan")),
        ("target_modules", ("q_proj", "../x")),
        ("target_modules", ()),
        ("method", "ppo"),
        ("dpo_beta", 0.0),
        ("reference_adapter", "/tmp/an-adapter"),  # with method sft: no reference model
    ],
)
def test_bad_spec_fields_are_named(tmp_path: Path, field: str, value: Any) -> None:
    with pytest.raises(ValueError, match=rf"TrainingSpec\.{field}"):
        TrainingSpec(base_model=tmp_path, dataset=tmp_path, output_root=tmp_path, **{field: value})


def test_spec_round_trips_through_json(tmp_path: Path) -> None:
    spec = TrainingSpec(base_model=tmp_path / "b", dataset=tmp_path / "d", output_root=tmp_path)
    assert TrainingSpec.from_json(spec.to_json()) == spec
    dpo = dataclasses.replace(spec, method="dpo", reference_adapter=tmp_path / "a")
    assert TrainingSpec.from_json(dpo.to_json()) == dpo
    data = json.loads(spec.to_json())
    data["surprise"] = 1
    with pytest.raises(ValueError, match="unknown fields"):
        TrainingSpec.from_json(json.dumps(data))


def test_child_environment_bounds_threads() -> None:
    env = child_environment(2, base={"PATH": "/bin"})
    assert env["OMP_NUM_THREADS"] == env["MKL_NUM_THREADS"] == "2"
    assert env["HF_HUB_OFFLINE"] == "1" and env["PATH"] == "/bin"
    assert env[PARENT_PID_ENV] == str(os.getpid())


CHILD = (
    "from retrain.training.parent_death import die_with_parent; die_with_parent();"
    " import time; print('ready', flush=True); time.sleep(60)"
)


def test_a_training_child_dies_with_the_process_that_started_it() -> None:
    # a parent that starts the child as the job runner does (its env), prints its pid, then waits
    parent_code = (
        "import subprocess, sys, time; from retrain.training.job import child_environment;"
        f" p = subprocess.Popen([sys.executable, '-c', {CHILD!r}], env=child_environment(1),"
        " stdout=subprocess.PIPE, text=True, start_new_session=True);"
        " p.stdout.readline(); print(p.pid, flush=True); time.sleep(60)"
    )
    parent = subprocess.Popen(
        [sys.executable, "-c", parent_code], stdout=subprocess.PIPE, text=True, cwd=REPO_ROOT
    )
    try:
        assert parent.stdout is not None
        child_pid = int(parent.stdout.readline())
        os.kill(parent.pid, signal.SIGKILL)
        parent.wait(10)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and running(child_pid):
            time.sleep(0.05)
        assert not running(child_pid), "the training child outlived its parent"
    finally:
        parent.kill()


def test_a_training_child_whose_parent_is_already_gone_stops() -> None:
    env = {**os.environ, PARENT_PID_ENV: "1", "PYTHONPATH": str(REPO_ROOT)}
    done = subprocess.run(
        [sys.executable, "-c", CHILD], env=env, capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 1 and "the process that started training (1) is gone" in done.stderr


# --- validate_adapter ----------------------------------------------------------------------


@pytest.fixture
def adapter_copy(trained: Any, tmp_path: Path) -> Path:
    result, _, _ = trained
    copy = tmp_path / "copy"
    shutil.copytree(result.adapter_path, copy)
    for path in copy.iterdir():
        path.chmod(0o644)
    return copy


def test_validate_adapter_accepts_a_good_adapter(adapter_copy: Path, tiny_base: Path) -> None:
    info = validate_adapter(adapter_copy, max_rank=16, base_model=tiny_base)
    assert info.rank == 8 and info.tensors == 8 and info.bytes > 0


def test_truncated_safetensors_is_rejected(adapter_copy: Path) -> None:
    weights = adapter_copy / WEIGHTS_FILE
    weights.write_bytes(weights.read_bytes()[:-100])
    with pytest.raises(AdapterError, match=f"{WEIGHTS_FILE} cannot be parsed"):
        validate_adapter(adapter_copy, max_rank=16)


def test_garbage_safetensors_is_rejected(adapter_copy: Path) -> None:
    (adapter_copy / WEIGHTS_FILE).write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{garbage")
    with pytest.raises(AdapterError, match="cannot be parsed"):
        validate_adapter(adapter_copy, max_rank=16)


def test_bad_config_json_is_rejected(adapter_copy: Path) -> None:
    (adapter_copy / CONFIG_FILE).write_text('{"r": 8,')
    with pytest.raises(AdapterError, match=f"{CONFIG_FILE} is not valid JSON"):
        validate_adapter(adapter_copy, max_rank=16)


def test_missing_files_are_named(adapter_copy: Path) -> None:
    (adapter_copy / WEIGHTS_FILE).unlink()
    (adapter_copy / CONFIG_FILE).unlink()
    with pytest.raises(AdapterError, match=f"{CONFIG_FILE} is missing; {WEIGHTS_FILE} is missing"):
        validate_adapter(adapter_copy, max_rank=16)


def test_rank_above_the_maximum_is_rejected(adapter_copy: Path) -> None:
    with pytest.raises(AdapterError, match="rank 8 exceeds the maximum 4"):
        validate_adapter(adapter_copy, max_rank=4)


def test_config_lying_about_rank_is_rejected(adapter_copy: Path) -> None:
    path = adapter_copy / CONFIG_FILE
    config = json.loads(path.read_text())
    config["r"] = 4
    path.write_text(json.dumps(config))
    with pytest.raises(AdapterError, match="has rank 8, config says 4"):
        validate_adapter(adapter_copy, max_rank=16)


def test_nan_weights_are_rejected(adapter_copy: Path) -> None:
    import numpy as np
    from safetensors.numpy import load_file, save_file

    weights = adapter_copy / WEIGHTS_FILE
    tensors = load_file(str(weights))
    name = sorted(tensors)[0]
    tensors[name] = np.full_like(tensors[name], np.nan)
    save_file(tensors, str(weights))
    with pytest.raises(AdapterError, match=f"tensor {name} holds NaN"):
        validate_adapter(adapter_copy, max_rank=16)


def test_other_base_model_is_rejected(
    adapter_copy: Path, tiny_base: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    other = build_tiny_llama(tmp_path_factory.mktemp("models") / "tiny-seed1", seed=1)
    with pytest.raises(AdapterError, match="different base model"):
        validate_adapter(adapter_copy, max_rank=16, base_model=other)


def test_altered_content_addressed_folder_is_rejected(trained: Any, tmp_path: Path) -> None:
    result, _, _ = trained
    copy = tmp_path / result.adapter_path.name
    shutil.copytree(result.adapter_path, copy)
    lineage = copy / LINEAGE_FILE
    lineage.chmod(0o644)
    lineage.write_text(lineage.read_text().replace('"seed": 0', '"seed": 1'))
    with pytest.raises(AdapterError, match="does not match the folder name"):
        validate_adapter(copy, max_rank=16)


def test_not_a_folder_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(AdapterError, match="is not a folder"):
        validate_adapter(tmp_path / "nope", max_rank=8)


def test_spec_paths_are_made_absolute_for_the_child(tmp_path, monkeypatch):
    """The child runs in a scratch folder: a relative path would point into it (a demo bug)."""
    monkeypatch.chdir(tmp_path)
    spec = TrainingSpec(base_model=Path("m"), dataset=Path("d/x"), output_root=Path("out"))
    assert spec.base_model == tmp_path / "m" and spec.dataset == tmp_path / "d" / "x"
    assert spec.output_root.is_absolute()
