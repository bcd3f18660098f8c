"""Adapter versions across a fleet: what every replica must hold, and waiting until each does.

In a fleet the ``Deployer`` does not call one vLLM: ``FleetPlacement`` is its placement. Loading
a version publishes its folder as an immutable bundle in object storage (``monitor.
adapter_bundles``, the key and digest recorded in the registry), adds it to the wanted set that
the routing table carries to every sidecar (``fleet_adapters``, so a restarted controller wants
the same), and waits until every live sidecar's agent reports it loaded with that digest. A
replica that reports a failure stops the rollout with its name and reason, and the version is
taken back out of the wanted set: the Deployer then never switches the route. The agents' reports
live in memory (``ReplicaReports``); a sidecar is live while it reported in the last
``live_after_s`` and its agent could reach its vLLM (a replica whose vLLM is down serves nothing,
so it cannot hold a rollout back).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from monitor.adapter_bundles import BundleError, BundleRef, publish
from monitor.object_store import ObjectStore
from monitor.store import Store
from retrain.adapter_registry import AdapterRegistry

MAX_SIDECARS = 1000  # bounds the reports kept (as the routing table's member list)


class RolloutError(RuntimeError):
    """A version could not be placed on every replica it must be on; the message names them."""


@dataclass(frozen=True)
class ReplicaReport:
    sidecar: str
    received: float  # the reports' clock (monotonic)
    loaded: dict[str, str]  # served name -> digest, confirmed through the replica's /v1/models
    failed: dict[str, str] = field(default_factory=dict)  # served name -> reason
    problem: str | None = None  # the agent cannot reach its vLLM, say


class ReplicaReports:
    """The last report of each sidecar's adapter agent."""

    def __init__(self, live_after_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.live_after_s = live_after_s
        self.clock = clock
        self._lock = threading.Lock()
        self._reports: dict[str, ReplicaReport] = {}

    def add(
        self,
        sidecar: str,
        loaded: dict[str, str],
        failed: dict[str, str],
        problem: str | None = None,
    ) -> None:
        with self._lock:
            if sidecar not in self._reports and len(self._reports) >= MAX_SIDECARS:
                return
            self._reports[sidecar] = ReplicaReport(sidecar, self.clock(), loaded, failed, problem)

    def live(self) -> dict[str, ReplicaReport]:
        """Replicas that count for a rollout: reported lately, and their vLLM answered."""
        horizon = self.clock() - self.live_after_s
        with self._lock:
            return {
                s: r
                for s, r in self._reports.items()
                if r.received >= horizon and r.problem is None
            }

    def snapshot(self) -> dict[str, dict[str, Any]]:
        now = self.clock()
        live = self.live()
        with self._lock:
            reports = dict(self._reports)
        return {
            s: {
                "live": s in live,
                "reported_s_ago": round(now - r.received, 1),
                "loaded": r.loaded,
                "failed": r.failed,
                "problem": r.problem,
            }
            for s, r in sorted(reports.items())
        }


@dataclass(frozen=True)
class Wanted:
    served_name: str
    alias: str
    ref: BundleRef
    sidecars: tuple[str, ...] | None  # None: every replica


class FleetPlacement:
    """Places adapter versions on the fleet's replicas (the Deployer's ``admin`` in a fleet)."""

    def __init__(
        self,
        store: Store,
        objects: ObjectStore,
        registry: AdapterRegistry,
        replicas: ReplicaReports,
        *,
        timeout_s: float = 300.0,
        poll_s: float = 0.25,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.store, self.objects, self.registry = store, objects, registry
        self.replicas = replicas
        self.timeout_s, self.poll_s, self.clock = timeout_s, poll_s, clock

    def load(self, name: str, path: str, *, sidecars: list[str] | None = None) -> None:
        """Hold ``name`` on every live replica (or on ``sidecars``); return once each reports it."""
        wanted = self._bundle(name, path, tuple(sidecars) if sidecars is not None else None)
        before = self._wanted_row(name)
        self._want(wanted)
        try:
            self._await(name, wanted.ref, sidecars)
        except RolloutError:
            if before is None:
                self.unload(name)
            else:
                self._want(before)
            raise

    def keep(self, name: str, path: str) -> None:
        """After a restart: keep ``name`` wanted on every replica, without waiting for them."""
        self._want(self._bundle(name, path, None))

    def unload(self, name: str) -> None:
        """No replica needs ``name`` any more: every agent unloads it."""
        self.store.execute("DELETE FROM fleet_adapters WHERE served_name = ?", [name])

    def wanted(self, sidecar: str | None = None) -> dict[str, dict[str, str]]:
        """The versions ``sidecar`` must hold (every wanted one when None), for its table."""
        return {
            w.served_name: w.ref.as_dict()
            for w in self._wanted_rows()
            if sidecar is None or w.sidecars is None or sidecar in w.sidecars
        }

    def _bundle(self, name: str, path: str, sidecars: tuple[str, ...] | None) -> Wanted:
        """The version's bundle, published (and recorded in the registry) on first use."""
        adapter = self.registry.by_served_name(name)
        if adapter is None:
            raise RolloutError(f"{name} is not in the adapter registry")
        if adapter.object_key is not None and adapter.digest is not None:
            ref = BundleRef(adapter.object_key, adapter.digest)
            return Wanted(name, adapter.model_alias, ref, sidecars)
        try:
            ref = publish(self.objects, adapter.model_alias, name, Path(path))
        except BundleError as exc:
            raise RolloutError(f"cannot publish {name}: {exc}") from exc
        self.registry.record_bundle(adapter.id, ref.key, ref.digest)
        return Wanted(name, adapter.model_alias, ref, sidecars)

    def _await(self, name: str, ref: BundleRef, sidecars: list[str] | None) -> list[str]:
        since = self.replicas.clock()
        deadline = since + self.timeout_s
        while True:
            live = self.replicas.live()
            targets = sorted(live) if sidecars is None else sorted(sidecars)
            fresh = {s: live[s] for s in targets if s in live and live[s].received >= since}
            failed = {s: r.failed[name] for s, r in fresh.items() if name in r.failed}
            if failed:
                raise RolloutError(
                    "; ".join(f"sidecar {s} cannot load {name}: {why}" for s, why in failed.items())
                )
            pending = [
                s for s in targets if s not in fresh or fresh[s].loaded.get(name) != ref.digest
            ]
            if targets and not pending:
                return targets
            if self.replicas.clock() >= deadline:
                if not targets:
                    raise RolloutError(
                        f"no live sidecar runs an adapter agent: nothing can hold {name}"
                    )
                raise RolloutError(
                    f"{name} not loaded within {self.timeout_s:g} s by: {', '.join(pending)}"
                )
            time.sleep(self.poll_s)

    def _want(self, wanted: Wanted) -> None:
        self.store.execute(
            "INSERT OR REPLACE INTO fleet_adapters (served_name, model_alias, object_key,"
            " digest, sidecars, wanted_since) VALUES (?, ?, ?, ?, ?, ?)",
            [
                wanted.served_name,
                wanted.alias,
                wanted.ref.key,
                wanted.ref.digest,
                None if wanted.sidecars is None else json.dumps(list(wanted.sidecars)),
                self.clock(),
            ],
        )

    def _wanted_row(self, name: str) -> Wanted | None:
        return next((w for w in self._wanted_rows() if w.served_name == name), None)

    def _wanted_rows(self) -> list[Wanted]:
        rows = self.store.query(
            "SELECT served_name, model_alias, object_key, digest, sidecars FROM fleet_adapters"
            " ORDER BY served_name"
        )
        return [
            Wanted(name, alias, BundleRef(key, digest), None if s is None else tuple(json.loads(s)))
            for name, alias, key, digest, s in rows
        ]
