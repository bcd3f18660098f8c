"""Adapters in object storage: immutable, content-addressed folders that every replica can fetch.

A bundle is an adapter folder uploaded file by file under
``adapters/<alias>/<served name>-<digest[:16]>/``, with a ``.bundle.json`` manifest written last that
lists each file's SHA-256. The digest is the SHA-256 of that list, so the key names the content:
uploading the same folder again writes nothing new (create-only puts), and different weights can
never hide under a key. A replica's agent fetches a bundle into its own cache, checks every file
and the digest before vLLM sees a byte of it, and renames the checked folder into place: a
half-downloaded or tampered bundle is never loaded.

>>> import tempfile, pathlib
>>> from monitor.object_store import ObjectStore
>>> folder = pathlib.Path(tempfile.mkdtemp())
>>> _ = (folder / "adapter_config.json").write_text("{}")
>>> store = ObjectStore.open(tempfile.mkdtemp())
>>> ref = publish(store, "support", "support-v1", folder)
>>> ref.key.startswith("adapters/support/support-v1-")
True
>>> (fetch(store, ref, pathlib.Path(tempfile.mkdtemp())) / "adapter_config.json").read_text()
'{}'
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from monitor.object_store import ObjectStore, ObjectStoreError

MANIFEST = ".bundle.json"  # beside the files; a dataset folder has its own manifest.json
MAX_FILES = 256  # adapter and dataset folders hold a handful; a manifest listing more is not one
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
DIGEST = re.compile(r"^[0-9a-f]{64}$")


class BundleError(RuntimeError):
    """A bundle that cannot be published or fetched, or whose bytes do not match its digest."""


@dataclass(frozen=True)
class BundleRef:
    """Where a bundle lives and what it must hash to."""

    key: str
    digest: str

    def as_dict(self) -> dict[str, str]:
        return {"key": self.key, "digest": self.digest}

    @classmethod
    def parse(cls, value: Any) -> BundleRef:
        """A reference from the routing table; ``BundleError`` names what is wrong with it."""
        if not isinstance(value, dict):
            raise BundleError(f"a bundle reference is an object, not {type(value).__name__}")
        key, digest = value.get("key"), value.get("digest")
        if not isinstance(digest, str) or not DIGEST.match(digest):
            raise BundleError(f"bundle digest {digest!r} is not a SHA-256 hex digest")
        if not isinstance(key, str) or key != bundle_key_of(key, digest):
            raise BundleError(f"bundle key {key!r} does not name a bundle of digest {digest}")
        return cls(key, digest)

    @property
    def folder_name(self) -> str:
        """``<served name>-<digest[:16]>``: the cache folder a replica loads it from."""
        return PurePosixPath(self.key).name


def bundle_key(alias: str, served_name: str, digest: str) -> str:
    for kind, value in (("alias", alias), ("served name", served_name)):
        if not NAME.match(value) or ".." in value:
            raise BundleError(f"{kind} {value!r} cannot name a bundle")
    return f"adapters/{alias}/{served_name}-{digest[:16]}"


def bundle_key_of(key: str, digest: str) -> str:
    """``key`` rebuilt from its parts: equal to ``key`` only when it is a well-formed bundle key."""
    parts = key.split("/")
    if len(parts) != 3 or parts[0] != "adapters" or not parts[2].endswith(f"-{digest[:16]}"):
        return ""
    try:
        return bundle_key(parts[1], parts[2][: -len(digest[:16]) - 1], digest)
    except BundleError:
        return ""


def folder_files(folder: Path) -> dict[str, str]:
    """Every regular file under ``folder`` but a manifest (relative POSIX path) -> its SHA-256."""
    if not folder.is_dir():
        raise BundleError(f"folder {folder} does not exist")
    files = {}
    for path in sorted(folder.rglob("*")):
        if path.is_symlink():
            raise BundleError(f"{path}: a bundle may not hold links")
        name = path.relative_to(folder).as_posix()
        if path.is_file() and name != MANIFEST:
            files[name] = _sha256(path.read_bytes())
    if not files or len(files) > MAX_FILES:
        raise BundleError(f"folder {folder} holds {len(files)} files (1-{MAX_FILES})")
    return files


def digest_of(files: dict[str, str]) -> str:
    listing = "".join(f"{name}\0{sha}\n" for name, sha in sorted(files.items()))
    return _sha256(listing.encode())


def publish(store: ObjectStore, alias: str, served_name: str, folder: Path) -> BundleRef:
    """Upload ``folder`` as a bundle (files first, the manifest last) and return its reference."""
    return publish_folder(store, lambda digest: bundle_key(alias, served_name, digest), folder)


def publish_folder(store: ObjectStore, key_of: Callable[[str], str], folder: Path) -> BundleRef:
    """Upload any folder the same way, under ``key_of(digest)`` (training inputs and outputs)."""
    files = folder_files(folder)
    digest = digest_of(files)
    ref = BundleRef(key_of(digest), digest)
    manifest = json.dumps({"digest": ref.digest, "files": files}, sort_keys=True).encode()
    try:
        for name in files:
            store.put_new(f"{ref.key}/{name}", (folder / name).read_bytes())
        store.put_new(f"{ref.key}/{MANIFEST}", manifest)
    except (ObjectStoreError, OSError) as exc:
        raise BundleError(f"cannot publish {folder} to {ref.key}: {exc}") from exc
    return ref


def fetch(store: ObjectStore, ref: BundleRef, cache_dir: Path) -> Path:
    """The verified bundle in ``cache_dir/<folder name>``, downloaded first when not there."""
    target = cache_dir / ref.folder_name
    if target.is_dir() and _verified(target, ref) is None:
        return target
    cache_dir.mkdir(parents=True, exist_ok=True)
    files = _manifest(store, ref)
    with tempfile.TemporaryDirectory(prefix=".fetch-", dir=cache_dir) as scratch:
        staged = Path(scratch) / ref.folder_name
        for name, sha in files.items():
            data = _get(store, f"{ref.key}/{name}")
            if _sha256(data) != sha:
                raise BundleError(f"{ref.key}/{name}: its bytes do not match the manifest")
            path = staged / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
        (staged / MANIFEST).write_text(json.dumps({"digest": ref.digest, "files": files}))
        if target.exists():  # a damaged earlier copy: replaced by the checked one
            shutil.rmtree(target)
        staged.rename(target)
    return target


def _manifest(store: ObjectStore, ref: BundleRef) -> dict[str, str]:
    try:
        body = json.loads(_get(store, f"{ref.key}/{MANIFEST}"))
        files = body["files"]
        if not isinstance(files, dict) or not 0 < len(files) <= MAX_FILES:
            raise ValueError(f"lists {len(files) if isinstance(files, dict) else '?'} files")
    except (ValueError, KeyError, TypeError) as exc:
        raise BundleError(f"{ref.key}/{MANIFEST} is not a bundle manifest: {exc}") from None
    for name, sha in files.items():
        if not _safe_relative(name) or not isinstance(sha, str) or not DIGEST.match(sha):
            raise BundleError(f"{ref.key}/{MANIFEST} lists a file it may not: {name!r}")
    if digest_of(files) != ref.digest:
        raise BundleError(f"{ref.key}: its manifest does not hash to digest {ref.digest}")
    return files


def _verified(folder: Path, ref: BundleRef) -> str | None:
    """None when ``folder`` holds exactly the bundle's files, else what is wrong."""
    try:
        files = json.loads((folder / MANIFEST).read_text())["files"]
        on_disk = folder_files(folder)
    except (OSError, ValueError, KeyError, TypeError, BundleError) as exc:
        return str(exc)
    if on_disk != files or digest_of(on_disk) != ref.digest:
        return "the files differ from the manifest"
    return None


def _safe_relative(name: Any) -> bool:
    if not isinstance(name, str) or not name or name == MANIFEST or "\\" in name:
        return False
    path = PurePosixPath(name)
    return not path.is_absolute() and all(part not in ("", ".", "..") for part in path.parts)


def _get(store: ObjectStore, key: str) -> bytes:
    try:
        return store.get(key)
    except ObjectStoreError as exc:
        raise BundleError(str(exc)) from exc


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
