"""A sidecar's capture shards on local disk, and the thread that uploads them to object storage.

A sealed shard is first written here (atomically, fsynced), then uploaded under the same key
with a create-only put and deleted. While object storage is unreachable, shards wait here, up to
``max_bytes``; beyond that the spool refuses new shards (``SpoolFullError``) and the capture
writer keeps rows in its own byte-bounded buffer, and counts them when that fills too. A
sidecar restarted after a crash uploads what its predecessor left.

Keys are ``captures/date=YYYY-MM-DD/hour=HH/sidecar=<id>/<sequence>.parquet``: time-partitioned
(the controller lists recent hours) and deterministic, so a retried upload is the same object.
"""

from __future__ import annotations

import logging
import os
import re
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from monitor.fleet_metrics import ShardMetrics
from monitor.fs import atomic_path, fsync_dir
from monitor.object_store import ObjectCollisionError, ObjectStore, ObjectStoreError

log = logging.getLogger(__name__)

PREFIX = "captures/"
SIDECAR_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
KEY = re.compile(
    r"^captures/date=(?P<date>\d{4}-\d{2}-\d{2})/hour=(?P<hour>\d{2})/"
    r"sidecar=(?P<sidecar>[A-Za-z0-9][A-Za-z0-9_.-]{0,63})/(?P<seq>\d{16})\.parquet$"
)
UPLOAD_BACKOFF_MAX_S = 5.0


class SpoolFullError(RuntimeError):
    """The spool holds ``max_bytes`` already: object storage has been unreachable too long."""


def shard_key(sidecar_id: str, sequence: int, sealed_at: float) -> str:
    """The object key of a shard.

    >>> shard_key("replica-1", 7, 0.0)
    'captures/date=1970-01-01/hour=00/sidecar=replica-1/0000000000000007.parquet'
    """
    when = datetime.fromtimestamp(sealed_at, UTC)
    return (
        f"{PREFIX}date={when:%Y-%m-%d}/hour={when:%H}/sidecar={sidecar_id}/{sequence:016d}.parquet"
    )


def sidecar_of(key: str) -> str | None:
    """The sidecar id in a shard key (None: not a shard key)."""
    match = KEY.match(key)
    return match["sidecar"] if match else None


def _sequence(key: str) -> int:
    """The sequence number of a spooled shard key (the spool keeps only keys that match KEY)."""
    match = KEY.match(key)
    if match is None:
        raise ValueError(f"{key!r} is not a shard key")
    return int(match["seq"])


def check_sidecar_id(value: str) -> str:
    if not SIDECAR_ID.match(value):
        raise ValueError(f"sidecar id {value!r} must be 1-64 letters, digits, '.', '_' or '-'")
    return value


class ShardSpool:
    """Shards waiting for object storage, oldest first, bounded in bytes."""

    def __init__(self, folder: Path, max_bytes: int, metrics: ShardMetrics) -> None:
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.max_bytes = max_bytes
        self._metrics = metrics
        self._lock = threading.Lock()
        self._sizes = {key: (self.folder / key).stat().st_size for key in self._scan()}
        self._publish()

    def add(self, key: str, data: bytes) -> None:
        """Keep a sealed shard on disk until it is uploaded (durable when this returns)."""
        with self._lock:
            if self.bytes + len(data) > self.max_bytes and self._sizes:
                raise SpoolFullError(
                    f"the spool {self.folder} holds {self.bytes} bytes"
                    f" (fleet.spool_max_bytes = {self.max_bytes}); object storage is unreachable"
                )
            path = self.folder / key
            path.parent.mkdir(parents=True, exist_ok=True)
            with atomic_path(path) as tmp, tmp.open("wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            fsync_dir(path.parent)
            self._sizes[key] = len(data)
            self._publish()

    def pending(self) -> list[str]:
        """Keys waiting, in sequence order (the order they were sealed)."""
        with self._lock:
            return sorted(self._sizes, key=_sequence)

    def read(self, key: str) -> bytes:
        return (self.folder / key).read_bytes()

    def remove(self, key: str) -> None:
        with self._lock:
            (self.folder / key).unlink(missing_ok=True)
            self._sizes.pop(key, None)
            self._publish()

    def highest_sequence(self) -> int:
        """The largest sequence number waiting here (-1 when empty)."""
        with self._lock:
            return max(map(_sequence, self._sizes), default=-1)

    @property
    def bytes(self) -> int:
        return sum(self._sizes.values())

    def _scan(self) -> list[str]:
        keys = []
        for path in self.folder.rglob("*.parquet"):
            key = path.relative_to(self.folder).as_posix()
            if KEY.match(key):  # temp files of a writer that died start with "." and are skipped
                keys.append(key)
        return keys

    def _publish(self) -> None:
        self._metrics.spool_bytes.set(self.bytes)
        self._metrics.spool_shards.set(len(self._sizes))


class Uploader:
    """Moves spooled shards to object storage in order, retrying with backoff while it is down.

    ``tick`` runs before each pass (the shard sink seals a shard that reached its age there).
    """

    def __init__(
        self,
        spool: ShardSpool,
        store: ObjectStore,
        metrics: ShardMetrics,
        *,
        tick: Callable[[], None] = lambda: None,
        interval_s: float = 0.5,
        rename: Callable[[str], str] | None = None,
    ) -> None:
        self.spool, self.store, self._metrics = spool, store, metrics
        self._tick, self._interval_s = tick, interval_s
        self._rename = rename
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self.problem: str | None = None
        self._backoff_s = 0.0

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="shard-uploader", daemon=True)
        self._thread.start()

    def wake(self) -> None:
        self._wake.set()

    def close(self, timeout_s: float = 10.0) -> None:
        """One last pass (seal and upload what it can), then stop; the rest stays spooled."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout_s)

    def upload_pending(self) -> bool:
        """Upload every spooled shard; False when object storage failed (the rest waits)."""
        for key in self.spool.pending():
            try:
                created = self.store.put_new(key, self.spool.read(key))
            except ObjectCollisionError as exc:
                if self._rename is None:
                    raise
                log.error("%s; uploading the shard under a new sequence number", exc)
                self._metrics.uploads.labels(outcome="renamed").inc()
                data = self.spool.read(key)
                self.spool.add(self._rename(key), data)  # first: a full spool keeps the old one
                self.spool.remove(key)
                return False
            except ObjectStoreError as exc:
                self._failed(str(exc))
                return False
            self._metrics.uploads.labels(outcome="uploaded" if created else "already_there").inc()
            self.spool.remove(key)
        if self.problem is not None:
            log.warning("object storage is back: %d shards uploaded", len(self.spool.pending()))
        self.problem, self._backoff_s = None, 0.0
        self._metrics.store_up.set(1)
        return True

    def _failed(self, message: str) -> None:
        if self.problem is None:
            log.error("shard upload failed, spooling locally: %s", message)
        self.problem = message
        self._backoff_s = min(max(self._backoff_s * 2, self._interval_s), UPLOAD_BACKOFF_MAX_S)
        self._metrics.uploads.labels(outcome="failed").inc()
        self._metrics.store_up.set(0)

    def _run(self) -> None:
        while True:
            stopping = self._stop.is_set()
            try:
                self._tick()
                self.upload_pending()
            except Exception:  # a bug must not end uploads: log it and try again later
                log.exception("shard uploader pass failed")
            if stopping:
                return
            self._wake.wait(self._backoff_s or self._interval_s)
            self._wake.clear()
