"""False alarms and power of drift detectors on real text, ours against two baselines, same windows.

    .venv/bin/python -m benchmarks.drift_power [--quick] [--jobs 2]

Windows come from ``benchmarks.drift_corpus`` (fortunes + chatterbot prompts, all-MiniLM-L6-v2).
No-drift pairs are two disjoint windows of base texts; when 2n exceeds the pool (n = 20,000) both
windows are drawn with replacement, and the output says so. Drifted pairs: a reference of n base
texts and a current window where a share s of the rows comes from topic A (linux fortunes) or B
(songs-poems) and the rest from base texts outside the reference (topic rows are drawn with
replacement when the topic has fewer texts than needed; flagged in the output).

Session case (real multi-turn traffic): every chatterbot-corpus conversation of every language,
its user turns as one session, sessions laid end to end in a random order
(``benchmarks.drift_corpus.session_stream``); a no-drift pair is two *consecutive* windows of that
stream, as the drift job's sliding window sees them. Above the pool size (n = 20,000) sessions are
drawn with replacement (a session drawn twice counts as two); the output says so. Shifted pairs
append topic rows (one-row sessions) to the current window's stream rows.

Embedding detectors, each run on every pair:
- ours: ``monitor.drift.embedding_drift`` mean-shift test (EMBEDDING_POLICY), sessions permuted whole
- ours, combined: the Cauchy combination of mean shift, cluster PSI and JS (what the job decides on)
- ours, rows independent: the mean-shift test without sessions (the null before issue 16)
- ours, mean only: the mean-shift test without the second-moment block (``components=0``)
- ours, cluster PSI: PSI over the pooled-fit cluster histogram, exact permutation p < 0.01
- Evidently Model, direct: ``ModelDriftMethod()`` called with its defaults (AUC > 0.55)
- Evidently Model, as its metric runs it: ``EmbeddingsDriftMetric`` turns on the method's bootstrap
  when the reference has fewer than 1,000 rows (``model(bootstrap=len(reference) < 1000)``)
- PSI > 0.2: k-means (k = 10) fit on the reference, the classic fixed threshold
- ours, alias decision: Holm over the combined embedding test and the token-length KS and PSI
  tests (the signals this corpus has; the job adds response and rate signals)

Token-length detectors (cl100k token counts of the same rows; the shift replaces a share of the
current window with base texts longer than the reference's 75th percentile):
ours ``length_drift`` (calibrated KS, LENGTH_POLICY) vs scipy's ``ks_2samp`` p < 0.01 vs PSI > 0.2
over reference deciles. Results go to ``benchmarks/results/drift_power[_quick].json``.

The library's defaults (mean shift with 32 second-moment components, alpha 0.01, min_effect 0.01)
were picked on exploratory runs with other window draws; ``--seed 1`` (the default) re-draws every
window, so the printed numbers confirm the choice rather than restate it.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.drift_corpus import (
    TOPIC_NAMES,
    DriftCorpus,
    load_corpus,
    null_pair,
    session_stream,
    topic_window,
)

RESULTS_DIR = Path("benchmarks/results")
ALPHA = 0.01
SHARES = (0.05, 0.10, 0.25, 0.50)
SESSION_SHARES = (0.10, 0.25)
LENGTH_SHARES = (0.10, 0.25)
NULL_SIZES = (200, 2000, 20000)
POWER_SIZE = 2000
EMBEDDING_DETECTORS = {
    "ours": "ours: mean shift (sessions whole)",
    "ours_combined": "ours: combined embedding test",
    "ours_rows": "ours: mean shift, rows independent",
    "ours_mean_only": "ours: mean shift only (components=0)",
    "ours_cluster_psi": "ours: cluster PSI, exact permutation",
    "evidently_model": "Evidently Model, direct call",
    "evidently_default": "Evidently Model, as its metric runs it",
    "psi_fixed": "PSI > 0.2 (k=10, reference-fit)",
}
LENGTH_DETECTORS = {
    "ours_length": "ours: length_drift (calibrated KS)",
    "scipy_ks": "scipy ks_2samp p < 0.01",
    "psi_deciles": "PSI > 0.2 (reference deciles)",
}
DECISION = {"ours_decision": "ours: alias decision (Holm, all signals)"}
CORPUS: DriftCorpus | None = None
THREAD_LIMITS: Any = None


@dataclass(frozen=True)
class Task:
    """One window pair to score: a scenario (null, topic shift or length shift) at size n."""

    kind: str
    topic: str
    share: float
    n: int
    index: int
    seed: int


def init_worker() -> None:
    """Run BLAS single-threaded in each worker: parallelism comes from the processes."""
    from threadpoolctl import threadpool_limits

    global THREAD_LIMITS
    THREAD_LIMITS = threadpool_limits(1)


def timed(function: Any, *args: Any) -> tuple[Any, float]:
    """Result and wall seconds of one call."""
    start = time.perf_counter()
    result = function(*args)
    return result, time.perf_counter() - start


def fixed_psi(reference: np.ndarray, current: np.ndarray, seed: int) -> tuple[bool, float]:
    """The classic: k-means (k=10) fit on the reference, PSI of the two histograms > 0.2."""
    from sklearn.cluster import KMeans

    from monitor.drift.statistics import psi

    model = KMeans(n_clusters=10, n_init=1, random_state=seed).fit(reference.astype(np.float64))
    ref_counts = np.bincount(model.labels_, minlength=10)
    cur_counts = np.bincount(model.predict(current.astype(np.float64)), minlength=10)
    score = float(psi(ref_counts, cur_counts).score)
    return score > 0.2, score


def evidently_model(reference: np.ndarray, current: np.ndarray) -> tuple[bool, float]:
    """Evidently 0.7's default embedding drift method, called directly with its defaults."""
    import pandas as pd
    from evidently.metrics.embeddings import ModelDriftMethod

    score, drifted, _ = ModelDriftMethod()(pd.DataFrame(current), pd.DataFrame(reference))
    return bool(drifted), float(score)


def evidently_default(reference: np.ndarray, current: np.ndarray) -> tuple[bool, float]:
    """Evidently's model method as ``EmbeddingsDriftMetric`` picks it: bootstrap below 1,000 rows."""
    import pandas as pd
    from evidently.legacy.metrics.data_drift.embedding_drift_methods import model

    method = model(bootstrap=reference.shape[0] < 1000)  # embeddings_drift.py, calculate()
    score, drifted, _ = method(pd.DataFrame(current), pd.DataFrame(reference))
    return bool(drifted), float(score)


def embedding_detectors(
    reference: np.ndarray,
    current: np.ndarray,
    seed: int,
    sessions: tuple[np.ndarray, np.ndarray] | None = None,
) -> dict[str, Any]:
    """Every embedding detector on one pair: decision, score (p-value), seconds."""
    from monitor.drift import EMBEDDING_POLICY, embedding_drift, mean_shift_test
    from monitor.drift.signals import decide

    out: dict[str, Any] = {}
    ours, seconds = timed(
        lambda: embedding_drift("prompts", reference, current, seed=seed, sessions=sessions)
    )
    out["ours"] = (ours.shift.drifted, ours.shift.p_value, seconds)
    out["ours_combined"] = (ours.combined.drifted, ours.combined.p_value, seconds)
    out["combined_effect"] = max(r.effect or 0.0 for r in (ours.shift, *ours.histograms))
    out["mde"] = ours.shift.min_detectable_shift
    out["n_effective"] = ours.shift.n_effective_cur
    psi_result = next(r for r in ours.histograms if r.statistic == "psi")
    out["ours_cluster_psi"] = (bool(psi_result.p_value < ALPHA), psi_result.p_value, seconds)
    if sessions is None:
        out["ours_rows"] = out["ours"]
    else:
        rows, seconds = timed(lambda: mean_shift_test(reference, current, seed=seed))
        drifted = decide(rows, EMBEDDING_POLICY, len(reference), len(current))
        out["ours_rows"] = (drifted, rows.p_value, seconds)
    mean_only, seconds = timed(
        lambda: mean_shift_test(reference, current, seed=seed, components=0, sessions=sessions)
    )
    drifted = decide(mean_only, EMBEDDING_POLICY, len(reference), len(current))
    out["ours_mean_only"] = (drifted, mean_only.p_value, seconds)
    (drifted, score), seconds = timed(evidently_model, reference, current)
    out["evidently_model"] = (drifted, score, seconds)
    if reference.shape[0] < 1000:
        (drifted, score), seconds = timed(evidently_default, reference, current)
        out["evidently_default"] = (drifted, score, seconds)
    else:  # the metric uses the direct call's rule at >= 1,000 rows: the same numbers
        out["evidently_default"] = out["evidently_model"]
    (drifted, score), seconds = timed(fixed_psi, reference, current, seed)
    out["psi_fixed"] = (drifted, score, seconds)
    return out


def length_detectors(
    reference: np.ndarray,
    current: np.ndarray,
    seed: int,
    sessions: tuple[np.ndarray, np.ndarray] | None = None,
) -> dict[str, Any]:
    """Every token-length detector on one pair: decision, score, seconds."""
    from scipy.stats import ks_2samp

    from monitor.drift import length_drift
    from monitor.drift.statistics import psi

    out: dict[str, Any] = {}
    ours, seconds = timed(
        lambda: length_drift("prompt_tokens", reference, current, seed=seed, sessions=sessions)
    )
    out["ours_length"] = (ours.drifted, ours.p_value, seconds)
    out["ours_length_effect"] = ours.effect
    binned = length_drift(
        "prompt_tokens", reference, current, statistic="psi", seed=seed, sessions=sessions
    )
    out["ours_length_psi"] = (binned.drifted, binned.p_value, 0.0)
    out["ours_length_psi_effect"] = binned.effect
    test, seconds = timed(ks_2samp, reference, current)
    out["scipy_ks"] = (bool(test.pvalue < ALPHA), float(test.pvalue), seconds)
    edges = np.unique(np.quantile(reference, np.linspace(0, 1, 11)[1:-1]))
    ref_counts = np.bincount(
        np.searchsorted(edges, reference, side="right"), minlength=len(edges) + 1
    )
    cur_counts = np.bincount(
        np.searchsorted(edges, current, side="right"), minlength=len(edges) + 1
    )
    score = float(psi(ref_counts, cur_counts).score)
    out["psi_deciles"] = (score > 0.2, score, 0.0)
    return out


def alias_decision(embedding: dict[str, Any], length: dict[str, Any], n: int) -> bool:
    """What the drift job decides from these signals: Holm over them, each with its own gates."""
    from monitor.drift import EMBEDDING_POLICY, LENGTH_POLICY
    from monitor.drift.decision import holm
    from monitor.drift.signals import check_verdict

    family = [
        (embedding["ours_combined"][1], embedding["combined_effect"], EMBEDDING_POLICY),
        (length["ours_length"][1], length["ours_length_effect"], LENGTH_POLICY),
        (length["ours_length_psi"][1], length["ours_length_psi_effect"], LENGTH_POLICY),
    ]
    adjusted = holm([p for p, _, _ in family])
    return any(
        check_verdict(float(p), effect or 0.0, policy, n, n)[0]
        for p, (_, effect, policy) in zip(adjusted, family, strict=True)
    )


def session_windows(
    rng: np.random.Generator, corpus: DriftCorpus, n: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, bool]:
    """Two consecutive windows of ``n`` rows of the session stream, with per-row session ids."""
    offset = int(rng.integers(0, 50))  # windows do not start at a session boundary
    rows, labels, replaced = session_stream(rng, corpus.session_ids, 2 * n + offset)
    ref = slice(offset, offset + n)
    cur = slice(offset + n, offset + 2 * n)
    return rows[ref], rows[cur], labels[ref], labels[cur], replaced


def run_session_task(
    task: Task, corpus: DriftCorpus, rng: np.random.Generator, seed: int
) -> dict[str, Any]:
    """A session-case pair: consecutive windows of real conversations, shifted or not."""
    from monitor.drift.sessions import session_codes

    vectors, tokens = corpus.embeddings["sessions"], corpus.tokens["sessions"]
    ref_rows, cur_rows, ref_labels, cur_labels, replaced = session_windows(rng, corpus, task.n)
    reference, current = vectors[ref_rows], vectors[cur_rows]
    ref_tokens, cur_tokens = tokens[ref_rows], tokens[cur_rows]
    cur_codes = session_codes(cur_labels.tolist())
    if task.kind == "session_topic":
        n_topic = round(task.n * task.share)
        picks = rng.choice(
            len(corpus.texts[task.topic]),
            size=n_topic,
            replace=n_topic > len(corpus.texts[task.topic]),
        )
        current = np.concatenate(
            [current[: task.n - n_topic], corpus.embeddings[task.topic][picks]]
        )
        cur_tokens = np.concatenate(
            [cur_tokens[: task.n - n_topic], corpus.tokens[task.topic][picks]]
        )
        kept = cur_codes[: task.n - n_topic]
        cur_codes = np.concatenate([kept, kept.max() + 1 + np.arange(n_topic)])
    sessions = (session_codes(ref_labels.tolist()), cur_codes)
    record: dict[str, Any] = {"task": task.__dict__, "replaced": replaced}
    record["embedding"] = embedding_detectors(reference, current, seed, sessions)
    record["length"] = length_detectors(ref_tokens, cur_tokens, seed, sessions)
    record["decision"] = {
        "ours_decision": (alias_decision(record["embedding"], record["length"], task.n),)
    }
    return record


def run_task(task: Task) -> dict[str, Any]:
    """Draw the task's windows (seeded by the task) and run the detectors that apply."""
    if CORPUS is None:
        raise RuntimeError("the corpus must be loaded before the pool starts")
    corpus = CORPUS
    seed = task.seed * 100_000 + task.index
    rng = np.random.default_rng(
        [task.seed, task.n, task.index, int(task.share * 1000), ord(task.topic[0])]
    )
    if task.kind.startswith("session"):
        return run_session_task(task, corpus, rng, seed)
    pool = len(corpus.texts["base"])
    base, tokens = corpus.embeddings["base"], corpus.tokens["base"]
    record: dict[str, Any] = {"task": task.__dict__}
    if task.kind == "null":
        ref_rows, cur_rows, replaced = null_pair(rng, pool, task.n)
        record["replaced"] = replaced
        record["embedding"] = embedding_detectors(base[ref_rows], base[cur_rows], seed)
        record["length"] = length_detectors(tokens[ref_rows], tokens[cur_rows], seed)
        record["decision"] = {
            "ours_decision": (alias_decision(record["embedding"], record["length"], task.n),)
        }
    elif task.kind == "topic":
        ref_rows = rng.choice(pool, size=task.n, replace=False)
        current, replaced = topic_window(rng, corpus, task.n, task.topic, task.share, ref_rows)
        record["replaced"] = replaced
        record["embedding"] = embedding_detectors(base[ref_rows], current, seed)
    else:
        ref_rows, cur_rows, replaced = null_pair(rng, pool, task.n)
        long_rows = np.flatnonzero(tokens > np.quantile(tokens[ref_rows], 0.75))
        swap = round(task.n * task.share)
        current = tokens[cur_rows].copy()
        current[:swap] = tokens[rng.choice(long_rows, size=swap, replace=False)]
        record["replaced"] = replaced
        record["length"] = length_detectors(tokens[ref_rows], current, seed)
    return record


def build_tasks(
    null_pairs: int, power_pairs: int, seed: int, large_pairs: int | None = None
) -> list[Task]:
    """No-drift pairs at every size (i.i.d. and sessions), shifts at POWER_SIZE."""

    def pairs(n: int) -> int:
        return null_pairs if n < 20000 or large_pairs is None else large_pairs

    tasks = [
        Task(kind, "-", 0.0, n, i, seed)
        for kind in ("null", "session_null")
        for n in NULL_SIZES
        for i in range(pairs(n))
    ]
    tasks += [
        Task("session_topic", topic, share, POWER_SIZE, i, seed)
        for topic in TOPIC_NAMES
        for share in SESSION_SHARES
        for i in range(power_pairs)
    ]
    tasks += [
        Task("topic", topic, share, POWER_SIZE, i, seed)
        for topic in TOPIC_NAMES
        for share in SHARES
        for i in range(power_pairs)
    ]
    tasks += [
        Task("length", "L", share, POWER_SIZE, i, seed)
        for share in LENGTH_SHARES
        for i in range(power_pairs)
    ]
    # expensive tasks first so the pool's tail is short
    return sorted(tasks, key=lambda task: -task.n)


def rate(records: list[dict[str, Any]], block: str, detector: str) -> float:
    """Share of records where the detector fired."""
    return float(np.mean([r[block][detector][0] for r in records]))


def median_of(records: list[dict[str, Any]], key: str) -> float | None:
    """Median of an embedding figure (None where no record has one)."""
    values = [r["embedding"][key] for r in records if r["embedding"].get(key) is not None]
    return float(np.median(values)) if values else None


def summarise(records: list[dict[str, Any]]) -> dict[str, Any]:
    """False-alarm rates, power and median seconds per detector and cell."""

    def select(kind: str, n: int, topic: str = "-", share: float = 0.0) -> list[dict[str, Any]]:
        return [
            r
            for r in records
            if r["task"]["kind"] == kind
            and r["task"]["n"] == n
            and r["task"]["topic"] == topic
            and r["task"]["share"] == share
        ]

    summary: dict[str, Any] = {
        "fpr": {},
        "power": {},
        "length_power": {},
        "seconds": {},
        "session_fpr": {},
        "session_power": {},
    }
    for kind, key in (("null", "fpr"), ("session_null", "session_fpr")):
        for n in NULL_SIZES:
            cell = select(kind, n)
            if not cell:
                continue
            summary[key][str(n)] = {
                "pairs": len(cell),
                "with_replacement": bool(any(r["replaced"] for r in cell)),
                **{d: rate(cell, "embedding", d) for d in EMBEDDING_DETECTORS},
                **{d: rate(cell, "length", d) for d in LENGTH_DETECTORS},
                **{d: rate(cell, "decision", d) for d in DECISION},
                "median_mde": median_of(cell, "mde"),
                "median_n_effective": median_of(cell, "n_effective"),
            }
            if kind == "null":
                summary["seconds"][str(n)] = {
                    d: float(np.median([r["embedding"][d][2] for r in cell]))
                    for d in EMBEDDING_DETECTORS
                }
    for topic in TOPIC_NAMES:
        for share in SESSION_SHARES:
            cell = select("session_topic", POWER_SIZE, topic, share)
            if cell:
                summary["session_power"][f"{topic} {share:.0%}"] = {
                    "pairs": len(cell),
                    **{d: rate(cell, "embedding", d) for d in EMBEDDING_DETECTORS},
                    **{d: rate(cell, "decision", d) for d in DECISION},
                }
    for topic in TOPIC_NAMES:
        for share in SHARES:
            cell = select("topic", POWER_SIZE, topic, share)
            summary["power"][f"{topic} {share:.0%}"] = {
                "pairs": len(cell),
                "with_replacement": bool(any(r["replaced"] for r in cell)),
                **{d: rate(cell, "embedding", d) for d in EMBEDDING_DETECTORS},
            }
    for share in LENGTH_SHARES:
        cell = select("length", POWER_SIZE, "L", share)
        summary["length_power"][f"{share:.0%}"] = {
            "pairs": len(cell),
            **{d: rate(cell, "length", d) for d in LENGTH_DETECTORS},
        }
    return summary


def print_table(title: str, columns: list[str], rows: dict[str, list[str]]) -> None:
    """A plain aligned text table."""
    print(f"\n{title}")
    width = max(len(name) for name in rows) + 2
    print(" " * width + "".join(f"{c:>10}" for c in columns))
    for name, cells in rows.items():
        print(f"{name:<{width}}" + "".join(f"{c:>10}" for c in cells))


def report(summary: dict[str, Any]) -> None:
    """Print false-alarm, power and timing tables."""
    power, seconds = summary["power"], summary["seconds"]
    sizes = [str(n) for n in NULL_SIZES]
    every = {**EMBEDDING_DETECTORS, **LENGTH_DETECTORS, **DECISION}
    for key, title in (("fpr", "i.i.d. prompts"), ("session_fpr", "sessions, consecutive windows")):
        cell = summary[key]
        pairs = ", ".join(f"n={n}: {cell[n]['pairs']} pairs" for n in sizes)
        rows = {label: [f"{cell[n][d]:.3f}" for n in sizes] for d, label in every.items()}
        rows["median min. detectable shift"] = [
            "-" if cell[n]["median_mde"] is None else f"{cell[n]['median_mde']:.3f}" for n in sizes
        ]
        rows["median effective n (current)"] = [
            f"{cell[n]['median_n_effective']:.0f}" for n in sizes
        ]
        print_table(
            f"False-alarm rate, no drift, {title} ({pairs})", [f"n={n}" for n in sizes], rows
        )
        replaced = [n for n in sizes if cell[n]["with_replacement"]]
        if replaced:
            print(f"  n={', '.join(replaced)}: drawn WITH replacement (pool smaller than 2n).")
    session_power = summary["session_power"]
    cells = list(session_power)
    print_table(
        f"Power on session windows at n={POWER_SIZE} ({session_power[cells[0]]['pairs']} pairs per cell)",
        cells,
        {
            label: [f"{session_power[c][d]:.2f}" for c in cells]
            for d, label in {**EMBEDDING_DETECTORS, **DECISION}.items()
        },
    )
    cells = list(power)
    print_table(
        f"Power at n={POWER_SIZE} (A = {TOPIC_NAMES['A']}, B = {TOPIC_NAMES['B']}; "
        f"{power[cells[0]]['pairs']} pairs per cell)",
        cells,
        {label: [f"{power[c][d]:.2f}" for c in cells] for d, label in EMBEDDING_DETECTORS.items()},
    )
    replaced = [c for c in cells if power[c]["with_replacement"]]
    if replaced:
        print(f"  {', '.join(replaced)}: topic rows drawn WITH replacement (topic too small).")
    length = summary["length_power"]
    print_table(
        f"Token-length shift power at n={POWER_SIZE} (share of current replaced by long prompts)",
        list(length),
        {label: [f"{length[c][d]:.2f}" for c in length] for d, label in LENGTH_DETECTORS.items()},
    )
    print_table(
        "Median seconds per call (one thread per worker; ours includes k-means, both tests, PSI/JS)",
        [f"n={n}" for n in sizes],
        {
            label: [f"{seconds[n][d]:.3f}" for n in sizes]
            for d, label in EMBEDDING_DETECTORS.items()
        },
    )


def versions() -> dict[str, str]:
    """Versions of the libraries that produced the numbers."""
    from importlib.metadata import version

    names = ("numpy", "scipy", "scikit-learn", "evidently", "sentence-transformers")
    return {name: version(name) for name in names}


def main() -> None:
    """Run every task over a process pool, print the tables, write the JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="few pairs (a few minutes)")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    parser.add_argument(
        "--seed", type=int, default=1, help="window draws (fresh draws: see the module doc)"
    )
    args = parser.parse_args()
    # n = 20,000 pairs cost ~20x an n = 2,000 pair: fewer of them in the full run (bounded time)
    null_pairs, power_pairs, large_pairs = (20, 10, 4) if args.quick else (300, 100, 100)

    global CORPUS
    started = time.perf_counter()
    CORPUS = load_corpus()
    import evidently.metrics.embeddings  # noqa: F401  (import once, before the workers fork)
    import sklearn.cluster  # noqa: F401

    tasks = build_tasks(null_pairs, power_pairs, args.seed, large_pairs)
    print(f"{len(tasks)} window pairs on {args.jobs} worker(s)...", flush=True)
    with ProcessPoolExecutor(max_workers=args.jobs, initializer=init_worker) as pool:
        records = list(pool.map(run_task, tasks, chunksize=1))
    summary = summarise(records)
    elapsed = time.perf_counter() - started
    report(summary)
    print(f"\nTotal {elapsed:.0f} s ({len(tasks)} pairs, {args.jobs} worker(s)).")
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / ("drift_power_quick.json" if args.quick else "drift_power.json")
    path.write_text(
        json.dumps(
            {
                "alpha": ALPHA,
                "seed": args.seed,
                "pool": {name: len(texts) for name, texts in CORPUS.texts.items()},
                "null_pairs": null_pairs,
                "power_pairs": power_pairs,
                "seconds_total": elapsed,
                "versions": versions(),
                "large_pairs": large_pairs,
                "machine": f"{os.cpu_count()} CPUs, {os.uname().machine}",
                "detectors": {**EMBEDDING_DETECTORS, **LENGTH_DETECTORS, **DECISION},
                **summary,
            },
            indent=2,
        )
    )
    print(f"Wrote {path}")


if __name__ == "__main__":
    main()
