"""Seconds to score embedding drift on 100k vs 100k rows × 384: ours against Evidently, same data.

    .venv/bin/python -m benchmarks.drift_speed [--rows 100000] [--repeats 3]

Data are synthetic unit vectors from a 50-topic mixture (the current window's topic shares are
shifted). Ours is the full ``embedding_drift`` call (pooled k-means fit on a sample, assignment of
every row, calibrated mean-shift test, calibrated PSI and JS), also timed part by part. Evidently
0.7's Model (domain classifier), Distance (euclidean of means) and Ratio (per-dimension
Wasserstein) methods are called directly with their defaults on the same rows; MMD is left out
(its kernel matrix is O(n²): 200k × 200k floats would not fit in memory). Medians of
``--repeats`` runs (the slow Ratio method runs once); ratios are Evidently / ours.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

RESULTS_DIR = Path("benchmarks/results")
DIM = 384
TOPICS = 50


def mixture(
    rng: np.random.Generator, rows: int, shares: np.ndarray, centres: np.ndarray
) -> np.ndarray:
    """Unit vectors around topic centres drawn with the given shares."""
    topic = rng.choice(len(centres), size=rows, p=shares)
    matrix = centres[topic] + rng.normal(scale=0.05, size=(rows, DIM)).astype(np.float32)
    return matrix / np.linalg.norm(matrix, axis=1, keepdims=True)


def windows(rows: int) -> tuple[np.ndarray, np.ndarray]:
    """A reference and a (slightly shifted) current window of synthetic embeddings."""
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(TOPICS, DIM)).astype(np.float32) / np.sqrt(DIM)
    shares = rng.dirichlet(np.ones(TOPICS))
    shifted = 0.9 * shares + 0.1 * rng.dirichlet(np.ones(TOPICS))
    return mixture(rng, rows, shares, centres), mixture(rng, rows, shifted, centres)


def median_seconds(function: Callable[[], Any], repeats: int) -> tuple[float, Any]:
    """Median wall seconds over ``repeats`` calls, and the last result."""
    times, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = function()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def main() -> None:
    """Time every method, print a table with ratios, write JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000, help="rows per window")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    import pandas as pd
    import sklearn.cluster  # noqa: F401  (import cost is not drift cost)
    from evidently.metrics.embeddings import (
        DistanceDriftMethod,
        ModelDriftMethod,
        RatioDriftMethod,
    )

    from monitor.drift import calibrate_histogram, cluster_histogram, embedding_drift
    from monitor.drift.mean_shift import mean_shift_test

    reference, current = windows(args.rows)
    print(f"{args.rows:,} vs {args.rows:,} rows × {DIM}, median of {args.repeats} runs", flush=True)
    rows: dict[str, dict[str, Any]] = {}

    seconds, result = median_seconds(lambda: embedding_drift("p", reference, current), args.repeats)
    rows["ours: embedding_drift (total)"] = {
        "seconds": seconds,
        "score": result.shift.score,
        "drifted": result.combined.drifted,
    }
    seconds, hist = median_seconds(lambda: cluster_histogram(reference, current), args.repeats)
    rows[f"  clusters: fit k={hist.k} + assign"] = {"seconds": seconds}
    labels = (hist.reference_labels, hist.current_labels)
    seconds, _ = median_seconds(
        lambda: mean_shift_test(reference, current, labels=labels), args.repeats
    )
    rows["  mean-shift test + contributions"] = {"seconds": seconds}
    seconds, _ = median_seconds(
        lambda: [calibrate_histogram(s, hist.reference, hist.current) for s in ("psi", "js")],
        args.repeats,
    )
    rows["  PSI + JS, 2,000 permutations each"] = {"seconds": seconds}

    ref_frame, cur_frame = pd.DataFrame(reference), pd.DataFrame(current)
    baselines: dict[str, tuple[Callable[[], Any], int]] = {
        "Evidently Model (classifier)": (
            lambda: ModelDriftMethod()(cur_frame.copy(), ref_frame.copy()),
            args.repeats,
        ),
        "Evidently Distance (euclidean)": (
            lambda: DistanceDriftMethod()(cur_frame, ref_frame),
            args.repeats,
        ),
        "Evidently Ratio (Wasserstein)": (lambda: RatioDriftMethod()(cur_frame, ref_frame), 1),
    }
    ours = rows["ours: embedding_drift (total)"]["seconds"]
    for name, (function, repeats) in baselines.items():
        print(f"  running {name}...", flush=True)
        seconds, (score, drifted, _) = median_seconds(function, repeats)
        rows[name] = {
            "seconds": seconds,
            "score": float(score),
            "drifted": bool(drifted),
            "ratio_to_ours": seconds / ours,
        }

    print(f"\n{'method':<40}{'seconds':>10}{'× ours':>10}")
    for name, row in rows.items():
        ratio = f"{row['ratio_to_ours']:.1f}" if "ratio_to_ours" in row else ""
        print(f"{name:<40}{row['seconds']:>10.3f}{ratio:>10}")
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / "drift_speed.json"
    payload = {"rows_per_window": args.rows, "dim": DIM, "repeats": args.repeats, "methods": rows}
    path.write_text(json.dumps(payload, indent=2))
    print(f"Wrote {path}")


if __name__ == "__main__":
    main()
