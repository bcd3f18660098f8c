"""k rule, determinism and counts of the pooled-fit cluster histogram."""

from __future__ import annotations

import numpy as np
import pytest

from monitor.drift.clusters import assign, choose_k, cluster_histogram


def blobs(rng: np.random.Generator, centres: list[int], size: int, dim: int = 8) -> np.ndarray:
    """Rows around the given one-hot directions (well separated clusters)."""
    rows = [np.eye(dim)[c] * 10 + rng.normal(scale=0.1, size=(size, dim)) for c in centres]
    return np.concatenate(rows).astype(np.float32)


@pytest.mark.parametrize(
    ("n_ref", "n_cur", "k"),
    [(10, 10, 2), (200, 200, 4), (2000, 2000, 40), (2000, 150, 3), (20000, 20000, 64)],
)
def test_k_rule(n_ref: int, n_cur: int, k: int) -> None:
    assert choose_k(n_ref, n_cur) == k


def test_k_rule_rejects_empty_windows() -> None:
    with pytest.raises(ValueError, match="both windows need rows"):
        choose_k(0, 10)


def test_same_seed_same_clusters() -> None:
    rng = np.random.default_rng(0)
    ref, cur = rng.normal(size=(300, 16)), rng.normal(size=(300, 16))
    first = cluster_histogram(ref, cur, seed=3)
    second = cluster_histogram(ref, cur, seed=3)
    np.testing.assert_array_equal(first.centroids, second.centroids)
    np.testing.assert_array_equal(first.current_labels, second.current_labels)


def test_counts_cover_every_row_and_a_new_blob_gets_its_own_cluster() -> None:
    rng = np.random.default_rng(1)
    ref = blobs(rng, [0, 1, 2], 100)
    cur = blobs(rng, [0, 1, 3], 100)
    hist = cluster_histogram(ref, cur, k=4, seed=0)
    assert hist.k == 4
    assert hist.reference.sum() == 300 and hist.current.sum() == 300
    new = int(np.bincount(hist.current_labels[200:]).argmax())
    assert hist.reference[new] == 0 and hist.current[new] == 100


def test_fewer_distinct_rows_than_k_gives_fewer_clusters_without_warnings() -> None:
    ref = np.ones((50, 4), dtype=np.float32)
    cur = np.concatenate([np.ones((25, 4)), np.zeros((25, 4))]).astype(np.float32)
    hist = cluster_histogram(ref, cur, k=5)
    assert hist.k == 2
    assert hist.reference.sum() == 50


def test_assign_picks_the_nearest_centroid() -> None:
    centroids = np.array([[0, 0], [10, 0], [0, 10]], dtype=np.float32)
    rows = np.array([[1, 1], [9, 1], [1, 8], [6, 0]], dtype=np.float32)
    np.testing.assert_array_equal(assign(rows, centroids), [0, 1, 2, 1])


@pytest.mark.parametrize(
    ("reference", "current", "message"),
    [
        (np.zeros((0, 4)), np.zeros((5, 4)), "reference window is empty"),
        (np.zeros((5, 4)), np.zeros((5, 3)), "dim 3, expected 4"),
        (np.zeros(5), np.zeros((5, 4)), "must be 2-D"),
        (np.full((5, 4), np.nan), np.zeros((5, 4)), "NaN in reference embeddings"),
    ],
)
def test_bad_embeddings_raise(reference: np.ndarray, current: np.ndarray, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        cluster_histogram(reference, current)
