"""Embeds captured prompts and responses off the request path and stores the vectors.

The model runs in a separate, niced worker process: encoding holds the GIL for long stretches,
and in the sidecar's own process that would show up as proxy latency. The service process keeps
sole ownership of the DuckDB file; the worker only ever sees texts and returns arrays.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from typing import Any

import numpy as np
import pyarrow as pa

from monitor.store import Store

log = logging.getLogger(__name__)

Encode = Callable[[Sequence[str]], np.ndarray]
FIELDS = ("prompt", "response")

_worker_embedder: Any = None


def _init_worker(options: dict[str, Any], niceness: int) -> None:
    global _worker_embedder
    os.nice(niceness)  # serving comes first; embedding takes what is left
    from monitor.embedding import Embedder

    _worker_embedder = Embedder(**options).load()


def _encode_in_worker(texts: list[str], batch_size: int) -> np.ndarray:
    return _worker_embedder.encode(texts, batch_size=batch_size)


class EmbeddingWorker:
    """One child process holding the embedding model; ``encode`` blocks until it answers.

    >>> worker = EmbeddingWorker(threads=1)  # doctest: +SKIP
    >>> worker.encode(["hello"]).shape  # doctest: +SKIP
    (1, 384)
    """

    def __init__(
        self, *, niceness: int = 10, batch_size: int = 64, **embedder_options: Any
    ) -> None:
        from monitor.embedding import Embedder

        # Validates options and reads model name and dimension here, without loading weights.
        probe = Embedder(**embedder_options)
        self.model_name = probe.model_name
        self.dim = probe.dim
        self._batch_size = batch_size
        self._pool = ProcessPoolExecutor(
            max_workers=1,
            mp_context=multiprocessing.get_context("spawn"),  # no forked DuckDB or event loop
            initializer=_init_worker,
            initargs=(embedder_options, niceness),
        )

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        if not texts:
            return np.empty((0, self.dim), dtype=np.float32)
        return self._pool.submit(_encode_in_worker, list(texts), self._batch_size).result()

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)


def pending_texts(store: Store, model_name: str, limit: int) -> list[tuple[str, str, str]]:
    """(request_id, field, text) for captured exchanges not yet embedded by ``model_name``."""
    rows = store.query(
        """
        SELECT r.request_id, r.prompt_text, r.response_text
        FROM requests r
        WHERE r.status_code = 200 AND r.prompt_text IS NOT NULL AND r.prompt_text <> ''
          AND NOT EXISTS (
            SELECT 1 FROM embeddings e WHERE e.request_id = r.request_id AND e.model = ?
          )
        ORDER BY r.started_at
        LIMIT ?
        """,
        [model_name, limit],
    )
    out = []
    for request_id, prompt, response in rows:
        out.append((request_id, "prompt", prompt))
        if response:  # an empty answer has nothing to embed; output signals count it instead
            out.append((request_id, "response", response))
    return out


def embed_pending(store: Store, encode: Encode, model_name: str, *, limit: int = 1024) -> int:
    """Embed up to ``limit`` not-yet-embedded exchanges; returns the number of vectors stored."""
    items = pending_texts(store, model_name, limit)
    if not items:
        return 0
    started = time.perf_counter()
    # Traffic repeats itself (greetings, templated prompts, canned answers): encode each text once.
    unique, inverse = np.unique(
        np.array([text for _, _, text in items], dtype=object), return_inverse=True
    )
    encoded = np.ascontiguousarray(encode(unique.tolist()), dtype=np.float32)
    if encoded.shape[0] != len(unique):
        raise ValueError(f"encoder returned {encoded.shape[0]} vectors for {len(unique)} texts")
    vectors = encoded[inverse]
    dim = vectors.shape[1]
    offsets = pa.array(np.arange(0, (len(items) + 1) * dim, dim, dtype=np.int32))
    table = pa.table(
        {
            "request_id": [request_id for request_id, _, _ in items],
            "field": [field for _, field, _ in items],
            "model": [model_name] * len(items),
            "vector": pa.ListArray.from_arrays(offsets, pa.array(vectors.reshape(-1))),
        }
    )
    store.append("embeddings", table)
    elapsed = time.perf_counter() - started
    log.info(
        "embedded %d texts (%d distinct) in %.1f s (%.0f/s)",
        len(items),
        len(unique),
        elapsed,
        len(items) / elapsed,
    )
    return len(items)


def load_vectors(
    store: Store, model_name: str, field: str, request_ids: Sequence[str]
) -> tuple[list[str], np.ndarray]:
    """Vectors of ``field`` for the given requests (those that have one), in a stable order."""
    if field not in FIELDS:
        raise ValueError(f"field must be one of {FIELDS}, not {field!r}")
    if not request_ids:
        return [], np.empty((0, 0), dtype=np.float32)
    cur = store.cursor()
    try:
        table = cur.sql(
            "SELECT request_id, vector FROM embeddings"
            " WHERE model = $model AND field = $field AND list_contains($ids, request_id)"
            " ORDER BY request_id",
            params={"model": model_name, "field": field, "ids": list(request_ids)},
        ).to_arrow_table()
    finally:
        cur.close()
    ids = table.column("request_id").to_pylist()
    if not ids:
        return [], np.empty((0, 0), dtype=np.float32)
    flat = table.column("vector").combine_chunks().flatten().to_numpy(zero_copy_only=False)
    return ids, flat.reshape(len(ids), -1).astype(np.float32, copy=False)
