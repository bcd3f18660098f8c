"""Versioned golden sets: load one, check it against its manifest, and list its prompts.

A golden set is ``golden_sets/<name>/<version>.jsonl`` (one example per line) described in
``golden_sets/manifest.json`` (sha256 of the file, rows per category, source, how it was
built). Loading re-hashes the file and refuses one that differs from its manifest entry: a
golden set that changed silently would make every gate decision after it meaningless.

>>> gs = load_golden_set("helpdesk")  # the newest version
>>> gs.version, gs.categories
('v1', ('chitchat', 'tech_support'))
>>> len(golden_prompts(gs)) > 0  # what retrain.data.dataset must keep out of training data
True
"""

from __future__ import annotations

import hashlib
import json
import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

GOLDEN_DIR = Path(__file__).resolve().parents[2] / "golden_sets"
MANIFEST_FILE = "manifest.json"
NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
VERSION = re.compile(r"^v[1-9][0-9]{0,5}$")
ROLES = ("system", "user", "assistant")
REQUIRED_FIELDS = ("id", "category", "messages", "expected")
OPTIONAL_FIELDS = ("must_match", "source")
LIVE_SLICE = "live_slice"  # the category of held-out teacher labels (see with_live_slice)


class GoldenSetError(ValueError):
    """A golden set or its manifest is missing, malformed or tampered with; says which file."""


@dataclass(frozen=True)
class GoldenExample:
    """One prompt with its category, expected answer and optional format regex."""

    id: str
    category: str
    messages: tuple[Mapping[str, str], ...]
    expected: str
    must_match: re.Pattern[str] | None = None
    source: Mapping[str, Any] | None = None

    @property
    def prompt(self) -> str:
        """The last user message: what a model is asked."""
        return next(m["content"] for m in reversed(self.messages) if m["role"] == "user")


@dataclass(frozen=True)
class GoldenSet:
    """A loaded, verified golden set version."""

    name: str
    version: str
    path: Path
    sha256: str
    examples: tuple[GoldenExample, ...]
    categories: tuple[str, ...]
    meta: Mapping[str, Any] = field(default_factory=dict)
    live_slice: str = ""  # the dataset whose held-out teacher labels were added, if any

    @property
    def ref(self) -> str:
        """``name/version`` (``+live:<dataset>`` with a live slice): how reports name the set."""
        return f"{self.name}/{self.version}" + (
            f"+live:{self.live_slice}" if self.live_slice else ""
        )

    def by_category(self, category: str) -> list[GoldenExample]:
        return [e for e in self.examples if e.category == category]


def validate_name(value: object, what: str = "golden set name") -> str:
    """Return ``value`` if it is safe to use in a path (lowercase, digits, ``_``, ``-``)."""
    if not isinstance(value, str) or not NAME.fullmatch(value):
        raise GoldenSetError(f"invalid {what} {value!r}: expected {NAME.pattern}")
    return value


def validate_version(value: object) -> str:
    """Return ``value`` if it is a version like ``v1``."""
    if not isinstance(value, str) or not VERSION.fullmatch(value):
        raise GoldenSetError(f"invalid golden set version {value!r}: expected v1, v2, …")
    return value


def file_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def read_manifest(root: Path = GOLDEN_DIR) -> dict[str, Any]:
    """The parsed manifest, ``{"sets": {name: {version: entry}}}``; a bad one is an error."""
    path = root / MANIFEST_FILE
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise GoldenSetError(f"golden set manifest {path} does not exist") from None
    except ValueError as exc:
        raise GoldenSetError(f"golden set manifest {path} is not valid JSON ({exc})") from None
    if not isinstance(data, dict) or not isinstance(data.get("sets"), dict):
        raise GoldenSetError(f"golden set manifest {path} has no 'sets' object")
    return data


def list_golden_sets(root: Path = GOLDEN_DIR) -> dict[str, list[str]]:
    """Every set in the manifest with its versions, oldest first."""
    sets = read_manifest(root)["sets"]
    return {name: sorted(versions, key=_version_number) for name, versions in sorted(sets.items())}


def load_golden_set(name: str, version: str | None = None, root: Path = GOLDEN_DIR) -> GoldenSet:
    """Load and verify ``name`` at ``version`` (default: the newest) against the manifest."""
    validate_name(name)
    manifest_path = root / MANIFEST_FILE
    versions = read_manifest(root)["sets"].get(name)
    if not isinstance(versions, dict) or not versions:
        available = sorted(read_manifest(root)["sets"])
        raise GoldenSetError(f"no golden set {name!r} in {manifest_path}; available: {available}")
    if version is None:
        version = max(versions, key=_version_number)
    validate_version(version)
    entry = versions.get(version)
    if not isinstance(entry, dict):
        raise GoldenSetError(
            f"golden set {name!r} has no version {version!r} in {manifest_path}; "
            f"available: {sorted(versions, key=_version_number)}"
        )
    categories = entry.get("categories")
    if not isinstance(categories, dict) or not categories:
        raise GoldenSetError(f"{manifest_path}: {name}/{version} declares no 'categories'")
    path = root / name / f"{version}.jsonl"
    if not path.is_file():
        raise GoldenSetError(f"golden set file {path} is missing (listed in {manifest_path})")
    digest = file_sha256(path)
    if digest != entry.get("sha256"):
        raise GoldenSetError(
            f"golden set file {path} does not match {manifest_path}: sha256 {digest} but the "
            f"manifest records {entry.get('sha256')}; the file was changed after it was built "
            "(golden sets are immutable: restore it, or build a new version)"
        )
    examples = parse_rows(path, set(categories))
    counts = Counter(e.category for e in examples)
    if dict(counts) != {k: v for k, v in categories.items() if v}:
        raise GoldenSetError(
            f"golden set file {path}: rows per category {dict(sorted(counts.items()))} differ "
            f"from the manifest's {categories}"
        )
    return GoldenSet(
        name=name,
        version=version,
        path=path,
        sha256=digest,
        examples=tuple(examples),
        categories=tuple(sorted(categories)),
        meta=entry,
    )


def parse_rows(path: Path, categories: set[str]) -> list[GoldenExample]:
    """Parse and validate every row of a golden set file; errors name the file and line."""
    examples: list[GoldenExample] = []
    seen: set[str] = set()
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        where = f"{path}:{number}"
        try:
            row = json.loads(line)
        except ValueError as exc:
            raise GoldenSetError(f"{where}: not valid JSON ({exc})") from None
        example = parse_row(row, categories, where)
        if example.id in seen:
            raise GoldenSetError(f"{where}: duplicate id {example.id!r}")
        seen.add(example.id)
        examples.append(example)
    if not examples:
        raise GoldenSetError(f"golden set file {path} has no rows")
    return examples


def parse_row(row: object, categories: set[str], where: str) -> GoldenExample:
    """One validated example from a decoded JSON row."""
    if not isinstance(row, dict):
        raise GoldenSetError(f"{where}: expected a JSON object, got {type(row).__name__}")
    missing = [k for k in REQUIRED_FIELDS if k not in row]
    if missing:
        raise GoldenSetError(f"{where}: missing field(s) {missing}")
    unknown = sorted(set(row) - set(REQUIRED_FIELDS) - set(OPTIONAL_FIELDS))
    if unknown:
        raise GoldenSetError(f"{where}: unknown field(s) {unknown}")
    for key in ("id", "category", "expected"):
        if not isinstance(row[key], str) or not row[key].strip():
            raise GoldenSetError(f"{where}: {key!r} must be a non-empty string")
    if row["category"] not in categories:
        raise GoldenSetError(
            f"{where}: unknown category {row['category']!r}; the manifest declares "
            f"{sorted(categories)}"
        )
    messages = _parse_messages(row["messages"], where)
    pattern = None
    if row.get("must_match") is not None:
        if not isinstance(row["must_match"], str):
            raise GoldenSetError(f"{where}: 'must_match' must be a string regex")
        try:
            pattern = re.compile(row["must_match"])
        except re.error as exc:
            raise GoldenSetError(
                f"{where}: 'must_match' {row['must_match']!r} is not a valid regex ({exc})"
            ) from None
        # An expected answer that fails its own format check would make the set contradict itself.
        if not pattern.search(row["expected"]):
            raise GoldenSetError(
                f"{where}: 'expected' does not match its own must_match {row['must_match']!r}"
            )
    source = row.get("source")
    if source is not None and not isinstance(source, dict):
        raise GoldenSetError(f"{where}: 'source' must be an object")
    return GoldenExample(row["id"], row["category"], messages, row["expected"], pattern, source)


def _parse_messages(value: object, where: str) -> tuple[Mapping[str, str], ...]:
    if not isinstance(value, list) or not value:
        raise GoldenSetError(f"{where}: 'messages' must be a non-empty list")
    out = []
    for i, message in enumerate(value):
        if (
            not isinstance(message, dict)
            or set(message) != {"role", "content"}
            or message["role"] not in ROLES
            or not isinstance(message["content"], str)
        ):
            raise GoldenSetError(
                f"{where}: messages[{i}] must be {{'role': one of {list(ROLES)}, "
                f"'content': string}}, got {message!r}"
            )
        out.append({"role": message["role"], "content": message["content"]})
    if out[-1]["role"] != "user":
        raise GoldenSetError(f"{where}: the last message must be the user's (the prompt)")
    return tuple(out)


def golden_prompts(golden_sets: GoldenSet | Iterable[GoldenSet]) -> list[str]:
    """Every prompt of the sets plus the corpus prompts they were made from, for exclusion.

    ``retrain.data.dataset.build_dataset(golden_prompts=...)`` removes training examples that
    match, nearly match or contain these, which keeps the gate measuring held-out prompts.
    """
    sets = [golden_sets] if isinstance(golden_sets, GoldenSet) else list(golden_sets)
    prompts: set[str] = set()
    for gs in sets:
        for example in gs.examples:
            prompts.update(m["content"] for m in example.messages if m["role"] == "user")
            if example.source and isinstance(example.source.get("prompt"), str):
                prompts.add(example.source["prompt"])
    return sorted(prompts)


def with_live_slice(
    golden: GoldenSet,
    records: Sequence[Mapping[str, Any]],
    dataset_id: str,
    must_match: str | None = None,
) -> GoldenSet:
    """The golden set plus a ``live_slice`` category: held-out teacher-labelled drifted prompts.

    Each record is a dataset example (user turn(s), then the teacher's answer, the reference);
    ``must_match`` is the house format the teacher's answers were accepted under.
    """
    pattern = re.compile(must_match) if must_match else None
    examples = []
    for i, record in enumerate(records):
        messages = tuple(record["messages"])
        examples.append(
            GoldenExample(
                id=f"live-{i}",
                category=LIVE_SLICE,
                messages=messages[:-1],
                expected=messages[-1]["content"],
                must_match=pattern,
                source={"dataset": dataset_id, "ref": record.get("ref")},
            )
        )
    if not examples:
        return golden
    blob = json.dumps([golden.sha256, [dict(r) for r in records], must_match], sort_keys=True)
    return replace(
        golden,
        sha256=hashlib.sha256(blob.encode()).hexdigest(),
        examples=(*golden.examples, *examples),
        categories=(*golden.categories, LIVE_SLICE),
        live_slice=dataset_id,
    )


def _version_number(version: str) -> int:
    return int(validate_version(version)[1:])
