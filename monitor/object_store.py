"""Object storage for the fleet: an S3 API (SeaweedFS, MinIO, AWS) or a local folder, one interface.

Built on obstore (the Rust ``object_store`` crate): it speaks S3 and the local file system with
the same calls, and its create-only put (``If-None-Match: *`` on S3, ``O_EXCL`` on disk) is
what makes shard uploads idempotent. A URL chooses the backend:

- ``s3://bucket/prefix`` with ``endpoint`` (empty for AWS); keys come from the environment
  variables named in config, never from the config file;
- ``file:///abs/path`` or a plain path: a local folder (one machine, or a shared mount).

>>> import tempfile
>>> store = ObjectStore.open(tempfile.mkdtemp())
>>> store.put_new("captures/a.parquet", b"rows")
True
>>> store.put_new("captures/a.parquet", b"rows")   # the same bytes again: already there, fine
False
>>> [o.key for o in store.list("captures/")]
['captures/a.parquet']
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from urllib.parse import urlsplit

import obstore
from obstore.exceptions import AlreadyExistsError, NotFoundError
from obstore.store import LocalStore, S3Store

# Bounded so that an unreachable store fails a call in seconds (the caller spools and retries).
REQUEST_TIMEOUT = "10s"
CONNECT_TIMEOUT = "2s"
RETRY_TIMEOUT = timedelta(seconds=5)


class ObjectStoreError(RuntimeError):
    """The store cannot be reached or refused a call; the message names the URL and the key."""


class ObjectCollisionError(ObjectStoreError):
    """A create-only put found different bytes under the key: two writers chose one name."""


@dataclass(frozen=True)
class StoredObject:
    key: str
    size: int
    last_modified: datetime


@dataclass(frozen=True)
class StoreAccess:
    """How to open a store: its URL and the names of the environment variables with its keys.

    Plain data, so it can travel to another process (a Ray worker) that reads the keys from its
    own environment: secrets never ride along.
    """

    url: str
    endpoint: str = ""
    region: str = "us-east-1"
    access_key_env: str = "AWS_ACCESS_KEY_ID"
    secret_key_env: str = "AWS_SECRET_ACCESS_KEY"

    def open(self) -> ObjectStore:
        return ObjectStore.open(
            self.url,
            endpoint=self.endpoint,
            region=self.region,
            access_key=os.environ.get(self.access_key_env),
            secret_key=os.environ.get(self.secret_key_env),
        )


class ObjectStore:
    """Create-only puts, listing and reads of one bucket prefix (or folder)."""

    def __init__(self, backend: S3Store | LocalStore, url: str, prefix: str = "") -> None:
        self._backend = backend
        self.url = url
        self._prefix = prefix.strip("/") + "/" if prefix.strip("/") else ""

    @classmethod
    def open(
        cls,
        url: str,
        *,
        endpoint: str = "",
        region: str = "us-east-1",
        access_key: str | None = None,
        secret_key: str | None = None,
    ) -> ObjectStore:
        parts = urlsplit(url)
        if parts.scheme == "s3":
            if not parts.netloc:
                raise ObjectStoreError(f"{url!r} names no bucket (s3://bucket/prefix)")
            options: dict[str, str | bool] = {
                "timeout": REQUEST_TIMEOUT,
                "connect_timeout": CONNECT_TIMEOUT,
            }
            if endpoint.startswith("http://"):
                options["allow_http"] = True
            backend = S3Store(
                parts.netloc,
                endpoint=endpoint or None,
                region=region,
                access_key_id=access_key,
                secret_access_key=secret_key,
                virtual_hosted_style_request=False,
                client_options=options,  # type: ignore[arg-type]
                retry_config={
                    "max_retries": 2,
                    "backoff": {
                        "init_backoff": timedelta(milliseconds=100),
                        "max_backoff": timedelta(seconds=1),
                        "base": 2,
                    },
                    "retry_timeout": RETRY_TIMEOUT,
                },
            )
            return cls(backend, url, parts.path)
        if parts.scheme not in ("", "file"):
            raise ObjectStoreError(f"{url!r}: object storage must be s3://bucket/prefix or a path")
        folder = Path(parts.path if parts.scheme == "file" else url).expanduser().resolve()
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ObjectStoreError(f"cannot create the store folder {folder}: {exc}") from None
        return cls(LocalStore(folder), str(folder))

    def put_new(self, key: str, data: bytes) -> bool:
        """Create ``key`` with ``data``; False when it already holds exactly these bytes.

        A retry after a lost reply finds its own earlier upload and succeeds without a second
        copy; different bytes under the key raise ``ObjectCollisionError``.
        """
        try:
            obstore.put(self._backend, self._prefix + key, data, mode="create")
            return True
        except AlreadyExistsError:
            existing = self.get(key)
            if hashlib.sha256(existing).digest() == hashlib.sha256(data).digest():
                return False
            raise ObjectCollisionError(
                f"{self.url}: {key} already holds {len(existing)} other bytes"
            ) from None
        except Exception as exc:
            raise ObjectStoreError(f"{self.url}: cannot write {key}: {_first_line(exc)}") from None

    def get(self, key: str) -> bytes:
        try:
            return bytes(obstore.get(self._backend, self._prefix + key).bytes())
        except NotFoundError:
            raise ObjectStoreError(f"{self.url}: {key} does not exist") from None
        except Exception as exc:
            raise ObjectStoreError(f"{self.url}: cannot read {key}: {_first_line(exc)}") from None

    def list(self, prefix: str) -> list[StoredObject]:
        """Every object under ``prefix`` (keys relative to the store's own prefix), sorted."""
        try:
            found = [
                StoredObject(meta["path"][len(self._prefix) :], meta["size"], meta["last_modified"])
                for batch in obstore.list(self._backend, prefix=self._prefix + prefix)
                for meta in batch
            ]
        except Exception as exc:
            raise ObjectStoreError(
                f"{self.url}: cannot list {prefix}: {_first_line(exc)}"
            ) from None
        return sorted(found, key=lambda o: o.key)


def _first_line(exc: BaseException) -> str:
    """obstore's messages carry a multi-line debug dump; the first line says what happened."""
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
