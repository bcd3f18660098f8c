"""What drifted: the clusters that moved or grew, with example texts, for drift_runs details."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from monitor.drift.clusters import ClusterHistogram
from monitor.drift.signals import DriftResult

EXAMPLES_PER_CLUSTER = 3
TOP_CLUSTERS = 5
# Request ids of the grown clusters kept per drifted evaluation: what a teacher may label.
MAX_GROWN_IDS = 500


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


def grown_request_ids(
    hist: ClusterHistogram, cur_ids: Sequence[str], limit: int = MAX_GROWN_IDS
) -> list[str]:
    """The current window's requests in clusters whose share grew, largest growth first.

    These are the prompts that drifted: the retrain loop's teacher labels them.
    """
    ref_share = hist.reference / max(1, hist.reference.sum())
    cur_share = hist.current / max(1, hist.current.sum())
    growth = cur_share - ref_share
    rank = {int(j): r for r, j in enumerate(np.argsort(-growth)) if growth[j] > 0}
    members = [
        (rank[label], i, request_id)
        for i, (request_id, label) in enumerate(
            zip(cur_ids, hist.current_labels.tolist(), strict=True)
        )
        if label in rank
    ]
    return [request_id for _, _, request_id in sorted(members)[:limit]]
