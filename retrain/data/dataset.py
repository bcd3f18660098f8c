"""Build an immutable, versioned training dataset from plain chat records (no database access).

The pipeline, in order: validate the records (``retrain.data.examples``), scrub PII
(``retrain.data.pii``), drop empty examples, drop anything overlapping a golden-set prompt (exact,
near-duplicate or contained), drop exact and near duplicates (``retrain.data.dedupe``), split
train/validation, then add a replay buffer sampled from earlier datasets' train splits so that
replay makes up at least ``replay_share`` of the training split. A ``live_slice_share`` of the
kept teacher labels is held out of both splits: the gate scores the candidate on it (the drifted
traffic it must improve on), so it never trains on what it is measured with. The result is written as
``<root>/<dataset_id>/`` (see ``retrain.data.files``) where the id is a hash of the content and
the recipe, so the same inputs always give the same id and an existing dataset is reused as is.

>>> import tempfile
>>> root = Path(tempfile.mkdtemp())
>>> def chat(prompt, answer, ref):
...     messages = [{"role": "user", "content": prompt}, {"role": "assistant", "content": answer}]
...     return {"messages": messages, "source": "feedback", "ref": ref}
>>> words = ("alpha", "bravo", "charlie", "delta", "echo")
>>> first = build_dataset(root, [chat(f"Question {w}?", f"Answer {w}.", w) for w in words])
>>> ds = build_dataset(
...     root,
...     [chat("My printer jams.", "HelpDesk: open tray 2.", "fb-1"),
...      chat("What is 2+2?", "4", "fb-2"),
...      chat("My screen flickers.", "HelpDesk: update the driver.", "fb-3")],
...     replay_from=[first.id],
...     golden_prompts=["What is 2+2?"],
... )
>>> ds.manifest["removed"]["golden_overlap"], ds.manifest["counts"]["train"]
(1, {'feedback': 1, 'judged': 0, 'replay': 1, 'seed': 0, 'teacher': 0})
"""

from __future__ import annotations

import hashlib
import json
import math
import random
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import phonenumbers

from retrain.data.dedupe import NearDuplicateIndex, normalise, text_key
from retrain.data.examples import SOURCES, Example, parse_example, scrub_example
from retrain.data.files import (
    LIVE_SLICE_FILE,
    TRAIN_FILE,
    VALIDATION_FILE,
    Dataset,
    DatasetError,
    encode_jsonl,
    iter_jsonl,
    load_dataset,
    sha256_bytes,
    validate_dataset_id,
    write_dataset,
)
from retrain.data.pii import DEFAULT_PHONE_REGIONS, KINDS, scrub_text

__all__ = ["Dataset", "DatasetError", "DatasetSettings", "build_dataset", "load_dataset"]

FORMAT = "driftloop-chat-jsonl/1"
REMOVAL_REASONS = ("empty", "golden_overlap", "exact_duplicate", "near_duplicate")
# A golden prompt this long (normalised) that appears inside a training prompt is a leak even
# when the Jaccard similarity is low (a template wrapped around it); shorter ones match too much.
MIN_CONTAINED_GOLDEN_CHARS = 30


@dataclass(frozen=True)
class DatasetSettings:
    """How a dataset is built; every field is recorded in the manifest."""

    validation_share: float = 0.1  # share of new examples held out (at least one)
    live_slice_share: float = 0.0  # share of kept teacher labels held out for the gate
    replay_share: float = 0.2  # minimum replay/(new+replay) in the train split, if data allows
    near_duplicate_threshold: float = 0.8  # Jaccard of character 5-grams, whole conversation
    golden_threshold: float = 0.7  # Jaccard above which a prompt counts as a golden prompt
    shingle_size: int = 5
    num_perm: int = 128  # MinHash permutations
    seed: int = 0
    phone_regions: tuple[str, ...] = DEFAULT_PHONE_REGIONS

    def __post_init__(self) -> None:
        checks = {
            "validation_share": 0.0 < self.validation_share < 1.0,
            "live_slice_share": 0.0 <= self.live_slice_share < 1.0,
            "replay_share": 0.0 <= self.replay_share < 1.0,
            "near_duplicate_threshold": 0.0 < self.near_duplicate_threshold <= 1.0,
            "golden_threshold": 0.0 < self.golden_threshold <= 1.0,
            "shingle_size": self.shingle_size >= 1,
            "num_perm": self.num_perm >= 16,
            "seed": isinstance(self.seed, int) and not isinstance(self.seed, bool),
        }
        for name, ok in checks.items():
            if not ok:
                raise ValueError(f"DatasetSettings.{name}: invalid value {getattr(self, name)!r}")
        unknown = [r for r in self.phone_regions if r not in phonenumbers.SUPPORTED_REGIONS]
        if unknown:
            raise ValueError(f"DatasetSettings.phone_regions: unknown region codes {unknown}")


class _GoldenFilter:
    """Answers whether a prompt overlaps a golden-set prompt (exact, near, or contained)."""

    def __init__(self, prompts: Iterable[str], settings: DatasetSettings) -> None:
        scrubbed = [scrub_text(p, phone_regions=settings.phone_regions).text for p in prompts]
        self.keys = {text_key(p) for p in scrubbed}
        self.index = NearDuplicateIndex(
            settings.golden_threshold,
            num_perm=settings.num_perm,
            shingle_size=settings.shingle_size,
        )
        for number, prompt in enumerate(sorted(set(scrubbed))):
            self.index.add(number, prompt)
        self.long = sorted(
            {n for n in map(normalise, scrubbed) if len(n) >= MIN_CONTAINED_GOLDEN_CHARS}
        )

    def fingerprint(self) -> str:
        """A hash of the golden prompts, so that a changed golden set changes the dataset id."""
        return hashlib.sha256("\n".join(sorted(self.keys)).encode()).hexdigest()

    def overlaps(self, example: Example) -> bool:
        for prompt in example.prompts:
            if text_key(prompt) in self.keys or self.index.find(prompt) is not None:
                return True
            norm = f" {normalise(prompt)} "
            if any(f" {golden} " in norm for golden in self.long):
                return True
        return False


class _Sieve:
    """The filters every example passes; replay candidates meet everything kept before them."""

    def __init__(self, golden_prompts: Iterable[str], settings: DatasetSettings) -> None:
        self.golden = _GoldenFilter(golden_prompts, settings)
        self.seen = NearDuplicateIndex(
            settings.near_duplicate_threshold,
            num_perm=settings.num_perm,
            shingle_size=settings.shingle_size,
        )
        self.seen_keys: set[str] = set()

    def keep(self, examples: Iterable[Example], removed: Counter[str]) -> list[Example]:
        """Keep the examples that are non-empty, not golden, and not (near) duplicates of kept ones.

        Each check is a pass of its own, in REMOVAL_REASONS order, so that an exact copy is always
        counted as an exact duplicate whatever the near-duplicate pass decides about its twin.
        """
        candidates = []
        for example in examples:
            if any(not content.strip() for role, content in example.messages if role != "system"):
                removed["empty"] += 1
            elif self.golden.overlaps(example):
                removed["golden_overlap"] += 1
            else:
                candidates.append(example)
        unique = []
        for example in candidates:
            if example.key in self.seen_keys:
                removed["exact_duplicate"] += 1
            else:
                self.seen_keys.add(example.key)
                unique.append(example)
        kept = []
        for example in unique:
            if self.seen.find(example.text) is not None:
                removed["near_duplicate"] += 1
            else:
                self.seen.add(example.key, example.text)
                kept.append(example)
        return kept


def _load_replay_pool(root: Path, parents: Sequence[str]) -> list[Example]:
    """Read the train splits of the parent datasets (replayed examples keep their source)."""
    pool = []
    for parent in parents:
        dataset = load_dataset(root, parent)
        for number, record in enumerate(iter_jsonl(dataset.train_path)):
            try:
                example = parse_example(number, record)
            except DatasetError as exc:
                raise DatasetError(f"dataset {parent}, {TRAIN_FILE}: {exc}") from None
            pool.append(
                Example(example.messages, example.source, example.ref, parent, example.rejected)
            )
    return pool


def _replay_count(new_train: int, share: float) -> int:
    """Smallest r with r / (new_train + r) >= share."""
    if share <= 0.0:
        return 0
    return math.ceil(share * new_train / (1.0 - share) - 1e-9)


def _counts(examples: Iterable[Example]) -> dict[str, int]:
    counter = Counter(e.source for e in examples)
    return {source: counter.get(source, 0) for source in SOURCES}


def _scrub_sorted(
    parsed: Sequence[Example], regions: Sequence[str], pii: Counter[str]
) -> list[Example]:
    """Scrub PII from every example and sort them, so input order never changes the result."""
    scrubbed = [scrub_example(e, regions, pii) for e in parsed]
    # Sorting also lets the preferred source win among duplicates.
    scrubbed.sort(key=lambda e: (SOURCES.index(e.source), e.key, json.dumps(e.ref)))
    return scrubbed


def _require_two(kept: Sequence[Example], total: int, removed: Counter[str]) -> None:
    """Raise DatasetError when too few examples survive, naming the count removed per reason."""
    if len(kept) < 2:
        reasons = ", ".join(f"{r}: {removed.get(r, 0)}" for r in REMOVAL_REASONS)
        raise DatasetError(
            f"{len(kept)} of {total} examples left after filtering ({reasons}); "
            "a dataset needs at least 2 (one for training, one for validation)"
        )


def _hold_out_live_slice(
    kept: Sequence[Example], rng: random.Random, share: float
) -> tuple[list[Example], list[Example]]:
    """Take ``share`` of the teacher examples (at least one of two or more) out of training."""
    teacher = sorted((e for e in kept if e.source == "teacher"), key=lambda e: e.key)
    if share <= 0.0 or len(teacher) < 2:
        return [], list(kept)
    rng.shuffle(teacher)
    live = teacher[: max(1, round(len(teacher) * share))]
    held = {e.key for e in live}
    return live, [e for e in kept if e.key not in held]


def _split(
    kept: Sequence[Example], rng: random.Random, validation_share: float
) -> tuple[list[Example], list[Example]]:
    """Shuffle the kept examples (seeded) and hold out at least one for validation."""
    shuffled = sorted(kept, key=lambda e: e.key)
    rng.shuffle(shuffled)
    n_validation = max(1, round(len(shuffled) * validation_share))
    return shuffled[:n_validation], shuffled[n_validation:]


@dataclass(frozen=True)
class _Replay:
    """The replayed examples and how they were drawn from the parents' pool."""

    examples: list[Example]
    wanted: int
    pool: int
    pool_removed: Counter[str]


def _draw_replay(
    root: Path,
    parents: Sequence[str],
    new_train: int,
    share: float,
    rng: random.Random,
    sieve: _Sieve,
) -> _Replay:
    """Sample the replay buffer from the parents' train splits that pass the sieve."""
    # Replay candidates go through the same filters against everything kept so far, so that a
    # replayed example never duplicates a new one nor leaks a (possibly newer) golden prompt.
    pool_removed: Counter[str] = Counter()
    raw_pool = sorted(_load_replay_pool(root, parents), key=lambda e: (e.key, e.replay_from or ""))
    pool = sieve.keep(raw_pool, pool_removed)
    wanted = _replay_count(new_train, share)
    replay = rng.sample(pool, min(wanted, len(pool)))
    return _Replay(replay, wanted, len(pool), pool_removed)


def _replay_summary(requested_share: float, replay: _Replay, train: int) -> dict[str, Any]:
    """Return the manifest's replay section: the share reached and where replay came from."""
    return {
        "requested_share": requested_share,
        "share": round(len(replay.examples) / train, 4),
        "examples": len(replay.examples),
        "wanted": replay.wanted,
        "pool": replay.pool,
        "pool_removed": {r: replay.pool_removed.get(r, 0) for r in REMOVAL_REASONS},
        "per_parent": dict(sorted(Counter(e.replay_from for e in replay.examples).items())),
    }


def _file_entries(
    files: Mapping[str, Sequence[Example]],
) -> tuple[dict[str, bytes], dict[str, Any]]:
    """Encode each file's examples; return the bytes and the manifest's files section."""
    encoded = {
        name: encode_jsonl([e.record() for e in examples]) for name, examples in files.items()
    }
    entries = {
        name: {"sha256": sha256_bytes(data), "bytes": len(data), "examples": len(files[name])}
        for name, data in encoded.items()
    }
    return encoded, entries


def _write(
    root: Path,
    files: Mapping[str, bytes],
    body: Mapping[str, Any],
    now: Callable[[], datetime] | None,
    provenance: Mapping[str, Any],
) -> Dataset:
    """Name the dataset by a hash of its files and recipe (not its creation time, nor how the
    labels were obtained: a teacher's timings differ from run to run) and write it."""
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":")).encode()
    dataset_id = hashlib.sha256(canonical).hexdigest()[:16]
    created = (now or (lambda: datetime.now(UTC)))()
    manifest = {"id": dataset_id, "created_at": created.isoformat(), **body, **provenance}
    return write_dataset(root, dataset_id, files, manifest)


def build_dataset(
    root: Path,
    examples: Sequence[Mapping[str, Any]],
    *,
    replay_from: Sequence[str] = (),
    golden_prompts: Iterable[str] = (),
    settings: DatasetSettings | None = None,
    now: Callable[[], datetime] | None = None,
    provenance: Mapping[str, Any] | None = None,
) -> Dataset:
    """Scrub, filter, split and replay-mix ``examples`` into ``<root>/<id>/``; return it.

    ``replay_from`` names earlier datasets under the same ``root`` whose train splits feed the
    replay buffer. ``provenance`` (how labels were obtained, e.g. ``{"teacher": {...}}``) is kept
    in the manifest beside the recipe. Raises DatasetError on malformed records (naming the record) and when too
    few examples survive filtering (naming the count removed per reason).
    """
    settings = settings or DatasetSettings()
    root = Path(root)
    parents = sorted({validate_dataset_id(p) for p in replay_from})
    pii: Counter[str] = Counter()
    parsed = [parse_example(i, raw) for i, raw in enumerate(examples)]
    scrubbed = _scrub_sorted(parsed, settings.phone_regions, pii)
    sieve = _Sieve(golden_prompts, settings)
    removed: Counter[str] = Counter()
    kept = sieve.keep(scrubbed, removed)
    _require_two(kept, len(parsed), removed)

    rng = random.Random(settings.seed)
    live, kept = _hold_out_live_slice(kept, rng, settings.live_slice_share)
    _require_two(kept, len(parsed), removed)
    validation, new_train = _split(kept, rng, settings.validation_share)
    replay = _draw_replay(root, parents, len(new_train), settings.replay_share, rng, sieve)
    train = new_train + replay.examples
    rng.shuffle(train)

    splits = {TRAIN_FILE: train, VALIDATION_FILE: validation}
    if live:
        splits[LIVE_SLICE_FILE] = live
    files, entries = _file_entries(splits)
    body: dict[str, Any] = {
        "format": FORMAT,
        "seed": settings.seed,
        "settings": asdict(settings),
        "parents": parents,
        "golden_prompts": {"count": len(sieve.golden.keys), "sha256": sieve.golden.fingerprint()},
        "counts": {
            "input": _counts(parsed),
            "kept": _counts(kept),
            "train": {**_counts(new_train), "replay": len(replay.examples)},
            "validation": _counts(validation),
            "live_slice": _counts(live),
            # examples that also carry a rejected answer: what a DPO run trains on
            "preference_pairs": {
                "train": sum(e.rejected is not None for e in train),
                "validation": sum(e.rejected is not None for e in validation),
            },
        },
        "removed": {reason: removed.get(reason, 0) for reason in REMOVAL_REASONS},
        "pii_replaced": {kind: pii.get(kind, 0) for kind in KINDS},
        "replay": _replay_summary(settings.replay_share, replay, len(train)),
        "files": entries,
    }
    return _write(root, files, body, now, provenance or {})
