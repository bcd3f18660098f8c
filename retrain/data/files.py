"""The on-disk form of a training dataset: an immutable, content-addressed folder.

``<root>/<dataset_id>/`` holds ``train.jsonl``, ``validation.jsonl`` (one chat example per line),
``live_slice.jsonl`` when teacher labels were held out for the gate, and ``manifest.json``
(hashes, counts, lineage). A folder is written under a temp name and
renamed into place, so a folder with the id's name is always complete; it is never rewritten.
Loading verifies every file against the sha256 recorded in the manifest.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from monitor.fs import fsync_dir, new_temp_dir, publish, remove_stale_temp_dirs

TRAIN_FILE = "train.jsonl"
VALIDATION_FILE = "validation.jsonl"
LIVE_SLICE_FILE = "live_slice.jsonl"
MANIFEST_FILE = "manifest.json"
SPLIT_FILES = {"train": TRAIN_FILE, "validation": VALIDATION_FILE, "live_slice": LIVE_SLICE_FILE}
DATASET_ID = re.compile(r"^[0-9a-f]{16}$")


class DatasetError(ValueError):
    """A dataset cannot be built or loaded; the message names what is wrong."""


def validate_dataset_id(value: object) -> str:
    """Return ``value`` if it is a dataset id (16 lowercase hex digits), else raise."""
    if not isinstance(value, str) or not DATASET_ID.fullmatch(value):
        raise DatasetError(f"invalid dataset id {value!r}: expected 16 lowercase hex digits")
    return value


@dataclass(frozen=True)
class Dataset:
    """A written dataset folder and its manifest."""

    id: str
    path: Path
    manifest: Mapping[str, Any]

    @property
    def train_path(self) -> Path:
        return self.path / TRAIN_FILE

    def read(self, split: str) -> list[dict[str, Any]]:
        """Return the examples of ``split`` (train, validation, live_slice) as dicts.

        A dataset without a live slice (no teacher labels held out) has an empty one.
        """
        if split not in SPLIT_FILES:
            raise DatasetError(f"unknown split {split!r}: expected one of {sorted(SPLIT_FILES)}")
        if SPLIT_FILES[split] not in self.manifest.get("files", {}):
            return []
        return list(iter_jsonl(self.path / SPLIT_FILES[split]))


def iter_jsonl(path: Path) -> Iterator[dict[str, Any]]:
    """Yield the JSON objects of a JSONL file, naming the file and line on bad JSON."""
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except ValueError as exc:
                raise DatasetError(f"{path}:{number}: not valid JSON ({exc})") from None
            if not isinstance(record, dict):
                raise DatasetError(f"{path}:{number}: expected a JSON object")
            yield record


def encode_jsonl(records: Sequence[Mapping[str, Any]]) -> bytes:
    """Encode records as canonical JSONL (sorted keys, UTF-8), so equal data gives equal bytes."""
    lines = (
        json.dumps(r, sort_keys=True, ensure_ascii=False, separators=(",", ":")) for r in records
    )
    return "".join(line + "\n" for line in lines).encode("utf-8")


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def load_dataset(root: Path, dataset_id: str, *, verify: bool = True) -> Dataset:
    """Open ``<root>/<dataset_id>`` and, by default, check every file against its manifest hash."""
    dataset_id = validate_dataset_id(dataset_id)
    path = Path(root) / dataset_id
    try:
        manifest = json.loads((path / MANIFEST_FILE).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DatasetError(f"dataset {dataset_id} not found under {root}") from None
    except ValueError as exc:
        raise DatasetError(
            f"dataset {dataset_id}: manifest.json is not valid JSON ({exc})"
        ) from None
    if not isinstance(manifest, dict) or manifest.get("id") != dataset_id:
        raise DatasetError(f"dataset {dataset_id}: manifest.json does not describe this dataset")
    if verify:
        for name, expected in manifest.get("files", {}).items():
            if name not in SPLIT_FILES.values():
                raise DatasetError(f"dataset {dataset_id}: manifest lists unexpected file {name!r}")
            try:
                actual = sha256_bytes((path / name).read_bytes())
            except FileNotFoundError:
                raise DatasetError(f"dataset {dataset_id}: {name} is missing") from None
            if actual != expected.get("sha256"):
                raise DatasetError(
                    f"dataset {dataset_id}: {name} does not match its manifest sha256 "
                    "(changed or truncated after it was written)"
                )
    return Dataset(dataset_id, path, manifest)


def write_dataset(
    root: Path, dataset_id: str, files: Mapping[str, bytes], manifest: Mapping[str, Any]
) -> Dataset:
    """Write the files and manifest atomically to ``<root>/<dataset_id>``, or reuse it if present."""
    dataset_id = validate_dataset_id(dataset_id)
    root = Path(root)
    target = root / dataset_id
    if target.exists():
        return load_dataset(root, dataset_id)
    root.mkdir(parents=True, exist_ok=True)
    remove_stale_temp_dirs(root)
    tmp = new_temp_dir(root)
    try:
        # The manifest goes last: together with the rename it is what "complete" means.
        for name, data in [*files.items(), (MANIFEST_FILE, _encode_manifest(manifest))]:
            with (tmp / name).open("wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            # Read-only: a dataset is immutable once written.
            (tmp / name).chmod(0o444)
        fsync_dir(tmp)
        publish(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return load_dataset(root, dataset_id)


def _encode_manifest(manifest: Mapping[str, Any]) -> bytes:
    return (json.dumps(manifest, indent=2, sort_keys=True, ensure_ascii=False) + "\n").encode()
