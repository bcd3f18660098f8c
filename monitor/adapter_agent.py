"""The sidecar's adapter agent: makes its own vLLM hold exactly the versions the controller wants.

The controller's routing table names the wanted versions (served name -> bundle reference). On
every new table, and every ``interval_s`` in case vLLM restarted empty, the agent compares them
with vLLM's ``/v1/models``: a wanted version not loaded is fetched into the local cache, checked
against its digest, loaded with ``/v1/load_lora_adapter`` and confirmed through ``/v1/models``; a
version it loaded earlier that is no longer wanted is unloaded. Adapters it did not load (from
vLLM's own ``--lora-modules``) are left alone. After each pass it reports what this replica holds
and what failed, with the reason, so the controller switches a route only when every replica
holds the version, and stops a rollout naming the replica that cannot.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge

from monitor.adapter_bundles import BundleError, BundleRef, fetch
from monitor.object_store import ObjectStore
from monitor.vllm_admin import VLLMAdmin, VLLMAdminError

log = logging.getLogger(__name__)


class AgentMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.changes = Counter(
            "driftloop_adapter_agent_changes_total",
            "Adapter versions this sidecar's agent loaded or unloaded, by action and outcome.",
            ["action", "outcome"],
            registry=registry,
        )
        self.held = Gauge(
            "driftloop_adapter_agent_held",
            "Wanted adapter versions this sidecar's vLLM holds (confirmed through /v1/models).",
            registry=registry,
        )
        self.failing = Gauge(
            "driftloop_adapter_agent_failing",
            "Wanted adapter versions this sidecar's vLLM could not load on the last pass.",
            registry=registry,
        )


class AdapterAgent:
    """Reconciles one vLLM with the wanted versions; ``report`` gets each pass's outcome."""

    def __init__(
        self,
        admin: VLLMAdmin,
        store: ObjectStore,
        cache_dir: Path,
        metrics: AgentMetrics,
        report: Callable[[dict[str, Any]], None],
        *,
        interval_s: float = 5.0,
    ) -> None:
        self.admin, self.store, self.metrics = admin, store, metrics
        self.cache_dir = cache_dir.resolve()  # compared with the paths vLLM reports
        self._report = report
        self._interval_s = interval_s
        self._wanted: dict[str, BundleRef] | None = None  # None: no table yet, touch nothing
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.last: dict[str, Any] = {"loaded": {}, "failed": {}, "problem": "no routing table yet"}

    def want(self, wanted: dict[str, BundleRef]) -> None:
        """The controller's wanted versions (from a routing table); reconciled at once."""
        with self._lock:
            self._wanted = dict(wanted)
        self._wake.set()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="adapter-agent", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(30)

    def reconcile(self) -> dict[str, Any]:
        """One pass: load what is wanted and missing, unload what this agent loaded and is not."""
        with self._lock:
            wanted = None if self._wanted is None else dict(self._wanted)
        if wanted is None:
            return self.last
        loaded: dict[str, str] = {}
        failed: dict[str, str] = {}
        problem = None
        try:
            served = self.admin.loaded_adapters()
            for name, ref in wanted.items():
                if self._holds(served, name, ref):
                    loaded[name] = ref.digest
                    continue
                reason = self._load(name, ref)
                if reason is None:
                    loaded[name] = ref.digest
                else:
                    failed[name] = reason
            for name, root in served.items():
                if name not in wanted and self._ours(root):
                    self._unload(name)
        except VLLMAdminError as exc:  # vLLM down: report it; the next pass retries
            problem = str(exc)
        self.metrics.held.set(len(loaded))
        self.metrics.failing.set(len(failed))
        self.last = {"loaded": loaded, "failed": failed, "problem": problem}
        return self.last

    def _holds(self, served: dict[str, str], name: str, ref: BundleRef) -> bool:
        root = served.get(name)
        return root is not None and Path(root).resolve() == self.cache_dir / ref.folder_name

    def _ours(self, root: str) -> bool:
        return Path(root).resolve().parent == self.cache_dir

    def _load(self, name: str, ref: BundleRef) -> str | None:
        """None when ``name`` now serves from the verified bundle, else why not."""
        try:
            path = fetch(self.store, ref, self.cache_dir)
            self.admin.load(name, str(path))
            if not self._holds(self.admin.loaded_adapters(), name, ref):
                raise VLLMAdminError(f"vLLM accepted {name} but /v1/models does not list it")
        except (BundleError, VLLMAdminError) as exc:
            self.metrics.changes.labels(action="load", outcome="failed").inc()
            log.error("cannot load %s (%s): %s", name, ref.key, exc)
            return str(exc)[:500]
        self.metrics.changes.labels(action="load", outcome="ok").inc()
        log.info("loaded %s from %s", name, ref.key)
        return None

    def _unload(self, name: str) -> None:
        try:
            self.admin.unload(name)
        except VLLMAdminError as exc:  # kept loaded costs memory; retried on the next pass
            self.metrics.changes.labels(action="unload", outcome="failed").inc()
            log.warning("cannot unload %s: %s", name, exc)
            return
        self.metrics.changes.labels(action="unload", outcome="ok").inc()
        log.info("unloaded %s (no longer wanted)", name)

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.clear()
            try:
                self._report(self.reconcile())
            except Exception:  # the agent must outlive any one bad pass
                log.exception("adapter agent pass failed")
            self._wake.wait(self._interval_s)
