"""The ONNX export of the embedding model: made once from the packaged weights, then cached.

The export needs torch and transformers (once); loading a cached export needs neither. The cache
key is the weights' and config's sha256 plus the recipe below, so a changed model or recipe never
reuses an old file. Files are written under a temp name and renamed (``monitor.fs``), so two
processes exporting at once do not clash.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
import warnings
from pathlib import Path

from monitor.fs import atomic_path, sha256_file

log = logging.getLogger(__name__)

ONNX_OPSET = 17
# Bump when the export recipe changes: it is part of the cache key, so old exports are ignored.
EXPORT_RECIPE = 1
ONNX_INPUTS = ("input_ids", "attention_mask", "token_type_ids")


class ExportError(RuntimeError):
    """The weights are missing or the packages the export needs are not installed."""


def _weights_file(model_path: Path) -> Path:
    for name in ("model.safetensors", "pytorch_model.bin"):
        if (model_path / name).is_file():
            return model_path / name
    raise ExportError(f"{model_path} has no model.safetensors or pytorch_model.bin")


def export_key(model_path: Path) -> str:
    """What the cached export depends on: the weights' and configs' bytes and the recipe."""
    parts = [f"recipe={EXPORT_RECIPE};opset={ONNX_OPSET}"]
    parts += [sha256_file(path) for path in (_weights_file(model_path), model_path / "config.json")]
    return hashlib.sha256(";".join(parts).encode()).hexdigest()[:16]


def onnx_export_dir(model_path: Path, cache_dir: Path) -> Path:
    return Path(cache_dir) / "onnx" / f"{model_path.name}-{export_key(model_path)}"


def export_onnx(model_path: str | Path, cache_dir: str | Path, *, quantize: bool = False) -> Path:
    """The path of the cached ONNX export of ``model_path`` (int8 if ``quantize``), made if missing.

    The graph takes input_ids, attention_mask and token_type_ids and returns the mean-pooled,
    L2-normalised sentence embedding. It is exported from the local weights (no hub) with
    torch's TorchScript exporter; int8 is onnxruntime's dynamic quantisation of that graph.
    Files are written to a temporary name and renamed, so concurrent exporters do not clash.
    """
    model_path = Path(model_path)
    folder = onnx_export_dir(model_path, Path(cache_dir))
    fp32 = folder / "model.onnx"
    if not fp32.is_file():
        folder.mkdir(parents=True, exist_ok=True)
        started = time.monotonic()
        with atomic_path(fp32) as tmp:
            _export_fp32(model_path, tmp)
        (folder / "export.json").write_text(
            json.dumps(
                {
                    "model_path": str(model_path),
                    "recipe": EXPORT_RECIPE,
                    "opset": ONNX_OPSET,
                    "seconds": round(time.monotonic() - started, 2),
                },
                indent=2,
            )
        )
        log.info("exported %s to %s in %.1f s", model_path.name, fp32, time.monotonic() - started)
    if not quantize:
        return fp32
    int8 = folder / "model_qint8.onnx"
    if not int8.is_file():
        started = time.monotonic()
        with atomic_path(int8) as tmp:
            _quantize_int8(fp32, tmp)
        log.info("quantised %s to int8 in %.1f s", fp32.name, time.monotonic() - started)
    return int8


def _export_fp32(model_path: Path, target: Path) -> None:
    try:
        import torch
        from transformers import AutoModel
    except ImportError as exc:
        raise ExportError(
            f"exporting to ONNX needs torch and transformers ({exc}); export on a machine that "
            "has them and copy the cache folder"
        ) from None

    # Eager attention traces to plain ops; the pooling and normalisation go into the graph.
    bert = AutoModel.from_pretrained(
        str(model_path), attn_implementation="eager", local_files_only=True
    ).eval()

    class Pooled(torch.nn.Module):
        def __init__(self, encoder: torch.nn.Module) -> None:
            super().__init__()
            self.encoder = encoder

        def forward(
            self,
            input_ids: torch.Tensor,
            attention_mask: torch.Tensor,
            token_type_ids: torch.Tensor,
        ) -> torch.Tensor:
            hidden = self.encoder(
                input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids
            ).last_hidden_state
            mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
            mean = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
            return torch.nn.functional.normalize(mean, p=2.0, dim=1)

    # The example batch has padding, so the traced graph is the general (masked) one.
    example = (
        torch.tensor([[101, 7592, 2088, 102], [101, 7592, 102, 0]], dtype=torch.long),
        torch.tensor([[1, 1, 1, 1], [1, 1, 1, 0]], dtype=torch.long),
        torch.zeros((2, 4), dtype=torch.long),
    )
    dynamic = {name: {0: "batch", 1: "sequence"} for name in ONNX_INPUTS}
    dynamic["sentence_embedding"] = {0: "batch"}
    with warnings.catch_warnings(), torch.no_grad():
        # The legacy exporter warns that it is legacy, and transformers' mask code warns that
        # Python values become trace constants (they are shape checks, true for every input).
        warnings.simplefilter("ignore", category=DeprecationWarning)
        warnings.simplefilter("ignore", category=torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", message=r"Exporting aten::index operator")
        torch.onnx.export(
            Pooled(bert).eval(),
            example,
            str(target),
            input_names=list(ONNX_INPUTS),
            output_names=["sentence_embedding"],
            dynamic_axes=dynamic,
            opset_version=ONNX_OPSET,
            dynamo=False,
        )


def _quantize_int8(fp32: Path, target: Path) -> None:
    try:
        from onnxruntime.quantization import QuantType, quantize_dynamic
    except ImportError as exc:
        raise ExportError(f"int8 quantisation needs onnxruntime and onnx ({exc})") from None
    # Per-channel weights: per-tensor int8 moved embeddings to a mean cosine of ~0.95 against
    # fp32 (min ~0.77); per-channel keeps ~0.99 (min ~0.95) on chatterbot text.
    root = logging.getLogger()
    chatter = _DropRecordsFrom("onnxruntime")  # it logs every tensor it skips, on the root logger
    root.addFilter(chatter)
    try:
        quantize_dynamic(fp32, target, weight_type=QuantType.QInt8, per_channel=True)
    finally:
        root.removeFilter(chatter)


class _DropRecordsFrom(logging.Filter):
    """Drops records logged from files under a package (for libraries that log on the root)."""

    def __init__(self, package: str) -> None:
        super().__init__()
        self.marker = f"{os.sep}{package}{os.sep}"

    def filter(self, record: logging.LogRecord) -> bool:
        return self.marker not in record.pathname
