"""The control API's audit log: rows buffered in memory and appended to DuckDB in Arrow batches.

Recording a call never touches the database, so neither the API nor (through the GIL and the
store lock) the proxy waits on a write. Floods are folded: calls recorded with ``aggregate=True``
(rate-limited ones), and any call once the buffer is full, become one row per (actor, client,
status) and window whose ``detail`` carries the count, so nothing goes unaudited and a flood
cannot grow the table faster than one row per client per window.

>>> from driftloop.api.schema import MIGRATIONS
>>> from monitor.store import Store
>>> log = AuditLog(Store.open(":memory:", migrations=MIGRATIONS))
>>> log.record("anonymous", "127.0.0.1", "GET", "/x", 429, aggregate=True)
>>> log.record("anonymous", "127.0.0.1", "GET", "/x", 429, aggregate=True)
>>> log.flush(force=True)
1
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pyarrow as pa
from prometheus_client import CollectorRegistry, Gauge
from prometheus_client import Counter as PromCounter

from monitor.store import Store

log = logging.getLogger(__name__)

MAX_PENDING = 10_000  # individual rows held between flushes; beyond it calls are folded
MAX_PATHS = 10  # distinct paths named in one aggregated row; the rest count as "other"
MAX_DETAIL_CHARS = 4_000
MAX_PATH_CHARS = 1_000
SCHEMA = pa.schema(
    [
        ("occurred_at", pa.timestamp("us", tz="UTC")),
        ("actor", pa.string()),
        ("client", pa.string()),
        ("method", pa.string()),
        ("path", pa.string()),
        ("status_code", pa.int32()),
        ("detail", pa.string()),
    ]
)


class AuditMetrics:
    """What the audit log and the API guard count, on the service's registry."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.rejected = PromCounter(
            "driftloop_api_rejected_total",
            "Control API calls refused before any route ran, by reason (unauthorized, rate_limited).",
            ["reason"],
            registry=registry,
        )
        self.write_errors = PromCounter(
            "driftloop_audit_write_errors_total",
            "Failed appends of audit rows to DuckDB (the rows are kept and retried).",
            registry=registry,
        )
        self.pending = Gauge(
            "driftloop_audit_pending_rows",
            "Audit rows (and folded aggregates) waiting to be written to DuckDB.",
            registry=registry,
        )


@dataclass
class _Fold:
    first_at: datetime
    last_at: datetime
    count: int = 0
    methods: Counter[str] = field(default_factory=Counter)
    paths: Counter[str] = field(default_factory=Counter)


class AuditLog:
    """Buffered, thread-safe audit rows for one store; ``flush`` writes them as one Arrow batch."""

    def __init__(
        self,
        store: Store | None,
        metrics: AuditMetrics | None = None,
        window_s: float = 60.0,
    ) -> None:
        self.store = store
        self.metrics = metrics or AuditMetrics(CollectorRegistry())
        self.window_s = window_s
        self._lock = threading.Lock()  # guards the buffers; held for microseconds
        self._write_lock = threading.Lock()  # one writer at a time, so rows keep their order
        self._rows: list[dict[str, Any]] = []
        self._folds: dict[tuple[str, str, int], _Fold] = {}
        self._folds_since = time.monotonic()

    def record(
        self,
        actor: str,
        client: str,
        method: str,
        path: str,
        status_code: int,
        detail: dict[str, Any] | None = None,
        *,
        aggregate: bool = False,
    ) -> None:
        """Remember one call; never blocks on the database."""
        if self.store is None:
            return
        now = datetime.now(UTC)
        with self._lock:
            if aggregate or len(self._rows) >= MAX_PENDING:
                self._fold(now, actor, client, method, path, status_code)
            else:
                self._rows.append(
                    {
                        "occurred_at": now,
                        "actor": actor,
                        "client": _text(client, 100),
                        "method": _text(method, 20),
                        "path": _text(path, MAX_PATH_CHARS),
                        "status_code": status_code,
                        "detail": _detail(detail),
                    }
                )
            self.metrics.pending.set(len(self._rows) + len(self._folds))

    def _fold(
        self, now: datetime, actor: str, client: str, method: str, path: str, status_code: int
    ) -> None:
        key = (actor, _text(client, 100), status_code)
        if not self._folds:
            self._folds_since = time.monotonic()
        fold = self._folds.setdefault(key, _Fold(first_at=now, last_at=now))
        fold.count += 1
        fold.last_at = now
        fold.methods[_text(method, 20)] += 1
        name = _text(path, MAX_PATH_CHARS)
        fold.paths[name if name in fold.paths or len(fold.paths) < MAX_PATHS else "other"] += 1

    def due(self) -> bool:
        """Whether a background flush would write anything."""
        with self._lock:
            old_folds = self._folds and time.monotonic() - self._folds_since >= self.window_s
            return bool(self._rows or old_folds)

    def flush(self, force: bool = False) -> int:
        """Write buffered rows (and folds older than the window, or all when forced); rows written.

        A failed append keeps the rows for the next flush and is counted, never raised: the
        API must answer even when its audit store is failing.
        """
        if self.store is None:
            return 0
        with self._write_lock:
            rows = self._take(force)
            if not rows:
                return 0
            try:
                self.store.append("audit_log", pa.Table.from_pylist(rows, schema=SCHEMA))
            except Exception as exc:
                log.error("could not write %d audit rows: %s", len(rows), exc)
                self.metrics.write_errors.inc()
                with self._lock:
                    keep = rows[: max(0, MAX_PENDING - len(self._rows))]
                    self._rows[:0] = keep
                    self.metrics.pending.set(len(self._rows) + len(self._folds))
                if len(keep) < len(rows):
                    log.error("audit buffer full: %d audit rows lost", len(rows) - len(keep))
                return 0
            return len(rows)

    def _take(self, force: bool) -> list[dict[str, Any]]:
        with self._lock:
            rows, self._rows = self._rows, []
            if self._folds and (force or time.monotonic() - self._folds_since >= self.window_s):
                rows.extend(_fold_row(key, fold) for key, fold in self._folds.items())
                self._folds = {}
            self.metrics.pending.set(len(self._rows) + len(self._folds))
        return rows


def _fold_row(key: tuple[str, str, int], fold: _Fold) -> dict[str, Any]:
    actor, client, status_code = key
    [(method, _)] = fold.methods.most_common(1)
    [(path, _)] = fold.paths.most_common(1)
    detail = {
        "aggregated": fold.count,
        "first_at": fold.first_at.isoformat(),
        "last_at": fold.last_at.isoformat(),
        "paths": dict(fold.paths),
    }
    return {
        "occurred_at": fold.last_at,
        "actor": actor,
        "client": client,
        "method": method if len(fold.methods) == 1 else "*",
        "path": path if len(fold.paths) == 1 else "*",
        "status_code": status_code,
        "detail": _detail(detail),
    }


def _detail(detail: dict[str, Any] | None) -> str | None:
    if not detail:
        return None
    text = json.dumps(detail, default=str)  # ASCII: lone surrogates arrive escaped
    if len(text) > MAX_DETAIL_CHARS:  # still JSON, so readers can always parse it
        text = json.dumps({"truncated": text[: MAX_DETAIL_CHARS - 100]})
    return text


def _text(value: str, limit: int) -> str:
    """Storable text: lone surrogates (valid in Python str, not in UTF-8) escaped, length capped."""
    return value[:limit].encode("utf-8", "backslashreplace").decode("utf-8")
