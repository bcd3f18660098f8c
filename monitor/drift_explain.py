"""What drifted: the clusters that moved or grew, with example texts, for drift_runs details."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from monitor.drift.clusters import ClusterHistogram
from monitor.drift.signals import DriftResult

EXAMPLES_PER_CLUSTER = 3
TOP_CLUSTERS = 5
# Request ids of the drifted prompts kept per drifted evaluation: what a teacher may label.
MAX_DRIFTED_IDS = 500
NOVELTY_QUANTILE = 0.95


def cluster_examples(
    hist: ClusterHistogram, cur_ids: Sequence[str], cur_rows: list[dict[str, Any]], field_name: str
) -> dict[int, list[str]]:
    text_of = {r["request_id"]: r[f"{field_name}_text"] for r in cur_rows}
    examples: dict[int, list[str]] = {}
    for request_id, label in zip(cur_ids, hist.current_labels.tolist(), strict=True):
        bucket = examples.setdefault(label, [])
        if len(bucket) < EXAMPLES_PER_CLUSTER and text_of.get(request_id):
            bucket.append(text_of[request_id][:200])
    return examples


def cluster_details(
    hist: ClusterHistogram, result: DriftResult, examples: dict[int, list[str]]
) -> dict[str, Any]:
    """The clusters that moved most and those that grew, with example texts: *what* drifted."""
    ref_share = hist.reference / max(1, hist.reference.sum())
    cur_share = hist.current / max(1, hist.current.sum())
    contributions = result.contributions if len(result.contributions) else cur_share - ref_share

    def describe(j: int) -> dict[str, Any]:
        return {
            "cluster": j,
            "reference_share": float(ref_share[j]),
            "current_share": float(cur_share[j]),
            "contribution": float(contributions[j]),
            "examples": examples.get(j, []),
        }

    by_contribution = np.argsort(-np.asarray(contributions))[:TOP_CLUSTERS]
    growth = cur_share - ref_share
    grew = [int(j) for j in np.argsort(-growth)[:TOP_CLUSTERS] if growth[j] > 0]
    return {
        "k": hist.k,
        "reference_shares": ref_share.round(4).tolist(),
        "current_shares": cur_share.round(4).tolist(),
        "top_clusters": [describe(int(j)) for j in by_contribution],
        "grew": [describe(j) for j in grew],
    }


def drifted_request_ids(
    hist: ClusterHistogram,
    ref_vec: np.ndarray,
    cur_vec: np.ndarray,
    cur_ids: Sequence[str],
    limit: int = MAX_DRIFTED_IDS,
) -> list[str]:
    """The current window's requests that drifted, least like the reference first.

    A request drifted when its cluster's share grew, or when its nearest reference prompt is
    farther from it than ``NOVELTY_QUANTILE`` of the reference prompts are from their own nearest
    neighbour (a topic shift lands many new prompts in old clusters when there are few of them).
    These are what the retrain loop's teacher labels.
    """
    ref_share = hist.reference / max(1, hist.reference.sum())
    cur_share = hist.current / max(1, hist.current.sum())
    grown = {int(j) for j in np.flatnonzero(cur_share - ref_share > 0)}
    novelty = 1.0 - _nearest_similarity(cur_vec, ref_vec)
    if len(ref_vec) > 1:
        bar = float(
            np.quantile(
                1.0 - _nearest_similarity(ref_vec, ref_vec, self_pairs=True), NOVELTY_QUANTILE
            )
        )
    else:
        bar = float("inf")
    labels = hist.current_labels.tolist()
    chosen = [i for i in range(len(cur_ids)) if labels[i] in grown or novelty[i] > bar]
    chosen.sort(key=lambda i: -novelty[i])
    return [cur_ids[i] for i in chosen[:limit]]


def _nearest_similarity(
    rows: np.ndarray, against: np.ndarray, *, self_pairs: bool = False, chunk: int = 1024
) -> np.ndarray:
    """Cosine similarity of each (normalised) row to its nearest row of ``against``, in chunks
    so that memory stays O(chunk x len(against)); ``self_pairs`` skips a row's own copy."""
    out = np.empty(len(rows), dtype=np.float32)
    for start in range(0, len(rows), chunk):
        sims = rows[start : start + chunk] @ against.T
        if self_pairs:
            idx = np.arange(start, min(start + chunk, len(rows)))
            sims[idx - start, idx] = -np.inf
        out[start : start + chunk] = sims.max(axis=1)
    return out
