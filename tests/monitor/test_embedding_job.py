"""Storing and reading embeddings in DuckDB (the model side is tested in test_embedding.py)."""

import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from monitor.capture import CapturedExchange
from monitor.embedding_job import embed_pending, load_vectors, pending_texts
from monitor.metrics import SidecarMetrics
from monitor.store import Store
from monitor.writer import CaptureWriter


def letter_counts(texts):
    """A deterministic stand-in encoder: normalised letter histograms (tests the storage only)."""
    out = np.zeros((len(texts), 26), dtype=np.float32)
    for i, text in enumerate(texts):
        for ch in text.lower():
            if "a" <= ch <= "z":
                out[i, ord(ch) - 97] += 1
    return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-9)


@pytest.fixture
def store(tmp_path):
    store = Store.open(tmp_path / "d.duckdb")
    writer = CaptureWriter(store, SidecarMetrics(CollectorRegistry()))
    writer.start()
    answers = {"r1": "Paris", "r2": "", "r3": "blue"}
    for i, (rid, answer) in enumerate(answers.items()):
        body = f'{{"choices":[{{"message":{{"content":"{answer}"}}}}]}}'.encode()
        writer.submit(
            CapturedExchange(
                request_id=rid,
                started_at=1000.0 + i,
                route="chat_completions",
                model_alias="m",
                served_model="m",
                stream=False,
                status_code=200,
                request_body=f'{{"messages":[{{"role":"user","content":"q{i} sky"}}]}}'.encode(),
                response_body=body,
            )
        )
    writer.close()
    yield store
    store.close()


def test_embeds_prompts_and_nonempty_responses_once(store):
    assert len(pending_texts(store, "letters", 100)) == 5  # 3 prompts + 2 non-empty answers
    assert embed_pending(store, letter_counts, "letters") == 5
    assert embed_pending(store, letter_counts, "letters") == 0  # nothing left
    assert embed_pending(store, letter_counts, "other-model") == 5  # per model


def test_vectors_round_trip(store):
    embed_pending(store, letter_counts, "letters")
    ids, vectors = load_vectors(store, "letters", "response", ["r1", "r2", "r3"])
    assert ids == ["r1", "r3"]
    np.testing.assert_allclose(vectors, letter_counts(["Paris", "blue"]), rtol=1e-6)


def test_wrong_vector_count_is_refused(store):
    with pytest.raises(ValueError, match="returned 1 vectors for 5 texts"):  # 5 distinct texts
        embed_pending(store, lambda texts: letter_counts(texts[:1]), "letters")


@pytest.mark.slow
def test_worker_process_embeds_with_the_real_model(store):
    from monitor.embedding_job import EmbeddingWorker

    worker = EmbeddingWorker(threads=1)
    try:
        assert embed_pending(store, worker.encode, worker.model_name) == 5
        ids, vectors = load_vectors(store, worker.model_name, "prompt", ["r1", "r2", "r3"])
    finally:
        worker.close()
    assert ids == ["r1", "r2", "r3"] and vectors.shape == (3, 384)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, rtol=1e-5)
