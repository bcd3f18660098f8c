"""Adapter bundles in a real object store folder: content-addressed, immutable, checked on fetch."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from monitor.adapter_bundles import MANIFEST, BundleError, BundleRef, digest_of, fetch, publish
from monitor.object_store import ObjectStore


@pytest.fixture
def adapter(tmp_path: Path) -> Path:
    folder = tmp_path / "adapter"
    (folder / "nested").mkdir(parents=True)
    (folder / "adapter_config.json").write_text('{"r": 8}')
    (folder / "adapter_model.safetensors").write_bytes(b"\x00\x01weights" * 100)
    (folder / "nested" / "result.json").write_text("{}")
    return folder


@pytest.fixture
def store(tmp_path: Path) -> ObjectStore:
    return ObjectStore.open(str(tmp_path / "bucket"))


def test_a_bundle_round_trips_and_its_key_names_its_content(adapter, store, tmp_path):
    ref = publish(store, "support", "support-v1", adapter)
    assert ref.key == f"adapters/support/support-v1-{ref.digest[:16]}"
    assert publish(store, "support", "support-v1", adapter) == ref  # again: nothing new
    local = fetch(store, ref, tmp_path / "cache")
    for name in ("adapter_config.json", "adapter_model.safetensors", "nested/result.json"):
        assert (local / name).read_bytes() == (adapter / name).read_bytes()
    (adapter / "adapter_config.json").write_text('{"r": 16}')
    other = publish(store, "support", "support-v1", adapter)
    assert other.digest != ref.digest and other.key != ref.key  # new weights, new key


def test_tampered_bytes_in_storage_are_refused_and_nothing_lands_in_the_cache(
    adapter, store, tmp_path
):
    ref = publish(store, "support", "support-v1", adapter)
    weights = Path(store.url) / ref.key / "adapter_model.safetensors"
    weights.write_bytes(b"evil")
    with pytest.raises(BundleError, match=r"adapter_model\.safetensors: its bytes do not match"):
        fetch(store, ref, tmp_path / "cache")
    assert not (tmp_path / "cache" / ref.folder_name).exists()


def test_a_manifest_that_escapes_the_bundle_or_lies_about_its_digest_is_refused(
    adapter, store, tmp_path
):
    ref = publish(store, "support", "support-v1", adapter)
    manifest = Path(store.url) / ref.key / MANIFEST
    body = json.loads(manifest.read_text())
    escaping = {**body["files"], "../../etc/passwd": "0" * 64}
    manifest.write_text(json.dumps({"files": escaping}))
    lying = BundleRef(ref.key, digest_of(escaping))
    with pytest.raises(BundleError, match="lists a file it may not"):
        fetch(store, lying, tmp_path / "cache")
    manifest.write_text(json.dumps({"files": {**body["files"], "extra": "0" * 64}}))
    with pytest.raises(BundleError, match="does not hash to digest"):
        fetch(store, ref, tmp_path / "cache")


def test_a_damaged_cached_copy_is_fetched_again(adapter, store, tmp_path):
    ref = publish(store, "support", "support-v1", adapter)
    local = fetch(store, ref, tmp_path / "cache")
    (local / "adapter_model.safetensors").write_bytes(b"bit rot")
    again = fetch(store, ref, tmp_path / "cache")
    assert again == local
    assert (again / "adapter_model.safetensors").read_bytes() == (
        adapter / "adapter_model.safetensors"
    ).read_bytes()


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ({"key": "adapters/a/a-v1-0123456789abcdef", "digest": "xyz"}, "not a SHA-256"),
        ({"key": "../adapters/a/a-v1-0123", "digest": "0123456789abcdef" * 4}, "does not name"),
        ({"key": "adapters/../x/a-v1-0123456789abcdef", "digest": "0123456789abcdef" * 4},
         "does not name"),
        ("adapters/a", "is an object"),
    ],
)  # fmt: skip
def test_references_from_a_routing_table_are_checked(value, message):
    with pytest.raises(BundleError, match=message):
        BundleRef.parse(value)


def test_folders_that_are_not_adapters_cannot_be_published(adapter, store, tmp_path):
    with pytest.raises(BundleError, match="does not exist"):
        publish(store, "support", "support-v1", tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(BundleError, match="holds 0 files"):
        publish(store, "support", "support-v1", tmp_path / "empty")
    with pytest.raises(BundleError, match="cannot name a bundle"):
        publish(store, "../support", "support-v1", adapter)
