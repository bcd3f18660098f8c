"""LoRA adapter folders: their content digest, the base-model fingerprint, and validation.

An adapter folder is ``<output root>/<digest>/`` where the digest is a sha256 over the files
that define the adapter (``CONTENT_FILES``); ``result.json`` (timings, metrics) sits beside them
and is not part of the digest. ``validate_adapter`` is the gate in front of vLLM: it parses the
config and the safetensors file without torch, checks rank, shapes, finiteness, the digest and
the base model, and raises AdapterError naming every problem found.

For a folder the trainer published (so not a doctest)::

    validate_adapter(Path("adapters/3f2a9c0d1e4b5a67"), max_rank=16, base_model=base_dir)
    # -> AdapterInfo(path=..., id="3f2a9c0d1e4b5a67", rank=8, ...), or AdapterError listing problems
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

CONFIG_FILE = "adapter_config.json"
WEIGHTS_FILE = "adapter_model.safetensors"
LINEAGE_FILE = "driftloop-adapter.json"
RESULT_FILE = "result.json"
CONTENT_FILES = (CONFIG_FILE, WEIGHTS_FILE, LINEAGE_FILE)
ADAPTER_ID = re.compile(r"^[0-9a-f]{16}$")
# Bytes hashed from each end of a base model's weight files: enough to tell different weights
# apart without reading 500 MB on every validation.
_FINGERPRINT_EDGE = 1 << 20
_LAYER = re.compile(r"\.layers\.(\d+)\.")


class AdapterError(ValueError):
    """An adapter folder is missing, corrupt, or does not fit the base model."""


@dataclass(frozen=True)
class AdapterInfo:
    """What validation learned about a good adapter."""

    path: Path
    id: str
    rank: int
    alpha: float
    target_modules: tuple[str, ...]
    tensors: int
    bytes: int


def adapter_digest(folder: Path) -> str:
    """Return the 16-hex content digest over the adapter's defining files."""
    digest = hashlib.sha256()
    for name in CONTENT_FILES:
        data = (folder / name).read_bytes()
        digest.update(f"{name}\0{len(data)}\0".encode())
        digest.update(data)
    return digest.hexdigest()[:16]


def base_model_fingerprint(model_dir: Path) -> str:
    """Return a cheap sha256 identifying a base model: its config plus its weight files' edges."""
    model_dir = Path(model_dir)
    digest = hashlib.sha256()
    try:
        digest.update((model_dir / "config.json").read_bytes())
        weights = sorted(model_dir.glob("*.safetensors"))
        if not weights:
            raise AdapterError(f"base model {model_dir} has no *.safetensors weights")
        for path in weights:
            size = path.stat().st_size
            digest.update(f"{path.name}\0{size}\0".encode())
            with path.open("rb") as handle:
                digest.update(handle.read(_FINGERPRINT_EDGE))
                handle.seek(max(0, size - _FINGERPRINT_EDGE))
                digest.update(handle.read(_FINGERPRINT_EDGE))
    except FileNotFoundError as exc:
        raise AdapterError(
            f"base model {model_dir} is incomplete: {exc.filename} missing"
        ) from None
    return digest.hexdigest()


def _read_json(path: Path, problems: list[str]) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        problems.append(f"{path.name} is missing")
        return None
    except (ValueError, UnicodeDecodeError) as exc:
        problems.append(f"{path.name} is not valid JSON ({exc})")
        return None
    if not isinstance(data, dict):
        problems.append(f"{path.name} is not a JSON object")
        return None
    return data


def _check_config(config: Mapping[str, Any], max_rank: int, problems: list[str]) -> None:
    if config.get("peft_type") != "LORA":
        problems.append(f"{CONFIG_FILE}: peft_type is {config.get('peft_type')!r}, not 'LORA'")
    rank = config.get("r")
    if not isinstance(rank, int) or isinstance(rank, bool) or rank < 1:
        problems.append(f"{CONFIG_FILE}: r must be a positive integer, got {rank!r}")
    elif rank > max_rank:
        problems.append(f"{CONFIG_FILE}: rank {rank} exceeds the maximum {max_rank}")
    alpha = config.get("lora_alpha")
    if not isinstance(alpha, int | float) or isinstance(alpha, bool) or alpha <= 0:
        problems.append(f"{CONFIG_FILE}: lora_alpha must be a positive number, got {alpha!r}")
    targets = config.get("target_modules")
    if not targets or not (
        isinstance(targets, str)
        or (isinstance(targets, list) and all(isinstance(t, str) for t in targets))
    ):
        problems.append(f"{CONFIG_FILE}: target_modules must name modules, got {targets!r}")
    for field in ("rank_pattern", "alpha_pattern"):
        if config.get(field):
            problems.append(f"{CONFIG_FILE}: {field} is not supported (one rank per adapter)")


def _load_tensors(path: Path, problems: list[str]) -> dict[str, Any] | None:
    """Load every tensor as numpy (adapters are small); None with a problem if unreadable."""
    from safetensors.numpy import load_file

    if not path.is_file():
        problems.append(f"{WEIGHTS_FILE} is missing")
        return None
    try:
        tensors = load_file(str(path))
    except Exception as exc:  # safetensors raises its own SafetensorError and OSError
        problems.append(f"{WEIGHTS_FILE} cannot be parsed ({type(exc).__name__}: {exc})")
        return None
    if not tensors:
        problems.append(f"{WEIGHTS_FILE} holds no tensors")
        return None
    return tensors


def _check_tensors(
    tensors: Mapping[str, Any],
    rank: int | None,
    base_config: Mapping[str, Any] | None,
    problems: list[str],
) -> None:
    import numpy as np

    dims: set[int] = set()
    layers = None
    if base_config is not None:
        hidden = int(base_config.get("hidden_size", 0))
        heads = int(base_config.get("num_attention_heads", 0) or 1)
        head_dim = int(base_config.get("head_dim") or hidden // heads)
        kv_heads = int(base_config.get("num_key_value_heads") or heads)
        dims = {hidden, int(base_config.get("intermediate_size", 0)), heads * head_dim}
        dims.add(kv_heads * head_dim)
        layers = base_config.get("num_hidden_layers")
    for name, tensor in sorted(tensors.items()):
        if not np.all(np.isfinite(tensor)):
            problems.append(f"{WEIGHTS_FILE}: tensor {name} holds NaN or infinite values")
        is_a, is_b = ".lora_A." in name, ".lora_B." in name
        if not (is_a or is_b) or tensor.ndim != 2:
            problems.append(f"{WEIGHTS_FILE}: unexpected tensor {name} {tuple(tensor.shape)}")
            continue
        actual_rank, feature = (tensor.shape[0], tensor.shape[1]) if is_a else tensor.shape[::-1]
        if rank is not None and actual_rank != rank:
            problems.append(f"{WEIGHTS_FILE}: {name} has rank {actual_rank}, config says {rank}")
        if dims and feature not in dims:
            problems.append(f"{WEIGHTS_FILE}: {name} has size {feature}, unknown to the base model")
        layer = _LAYER.search(name)
        if layers is not None and layer and int(layer[1]) >= int(layers):
            problems.append(f"{WEIGHTS_FILE}: {name} targets layer {layer[1]}; base has {layers}")


def validate_adapter(path: Path, *, max_rank: int, base_model: Path | None = None) -> AdapterInfo:
    """Check that ``path`` is a complete, sane LoRA adapter for ``base_model``; raise otherwise."""
    path = Path(path)
    if not path.is_dir():
        raise AdapterError(f"adapter {path} is not a folder")
    problems: list[str] = []
    config = _read_json(path / CONFIG_FILE, problems)
    if config is not None:
        _check_config(config, max_rank, problems)
    rank = config.get("r") if config is not None and isinstance(config.get("r"), int) else None
    base_config = None
    if base_model is not None:
        base_config = _read_json(Path(base_model) / "config.json", problems)
    tensors = _load_tensors(path / WEIGHTS_FILE, problems)
    if tensors is not None:
        _check_tensors(tensors, rank, base_config, problems)
    lineage = _read_json(path / LINEAGE_FILE, problems)
    if lineage is not None and base_model is not None:
        recorded = (lineage.get("base_model") or {}).get("fingerprint")
        if recorded != base_model_fingerprint(Path(base_model)):
            problems.append(f"trained on a different base model than {base_model}")
    digest = None
    if not problems:
        digest = adapter_digest(path)
        # A content-addressed folder whose content no longer matches its name was altered.
        if ADAPTER_ID.fullmatch(path.name) and digest != path.name:
            problems.append(f"content digest {digest} does not match the folder name")
    if problems or config is None or tensors is None or digest is None:
        raise AdapterError(f"adapter {path} is not usable: " + "; ".join(problems))
    targets = config["target_modules"]
    return AdapterInfo(
        path=path,
        id=digest,
        rank=int(config["r"]),
        alpha=float(config["lora_alpha"]),
        target_modules=(targets,) if isinstance(targets, str) else tuple(targets),
        tensors=len(tensors),
        bytes=sum((path / name).stat().st_size for name in CONTENT_FILES),
    )
