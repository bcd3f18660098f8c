"""Training as a Ray task on a real two-node cluster on loopback, inputs and outputs through storage.

The cluster is ``ray.cluster_utils.Cluster`` (a head and a worker node with the custom resource
``trainer``, both on 127.0.0.1); the store is a real folder store. Stopped by its own object,
never by ``ray stop``.
"""

from __future__ import annotations

import ipaddress
import os
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from monitor.object_store import ObjectStore, StoreAccess
from retrain.training.adapters import validate_adapter
from retrain.training.ray_executor import RayExecutor
from retrain.training.spec import (
    TrainingCancelledError,
    TrainingError,
    TrainingProgress,
    TrainingSpec,
)
from tests import polling
from tests.retrain.processes import running
from tests.retrain.training_data import helpdesk_dataset

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]
# Read when Ray is imported: without it a local Cluster's addresses become the machine's own
# external address (fleet-engines.md, "Ray and its loopback trap"); Ray stays on 127.0.0.1.
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Any:
    return helpdesk_dataset(tmp_path_factory.mktemp("datasets"))


@pytest.fixture
def cluster(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    import ray
    from ray.cluster_utils import Cluster

    # Short: Ray's socket paths must fit in 107 bytes.
    monkeypatch.setenv("RAY_TMPDIR", f"/tmp/ray-{os.getpid()}-{time.monotonic_ns() % 10**6}")
    head = {"num_cpus": 1, "include_dashboard": False, "node_ip_address": "127.0.0.1"}
    running = Cluster(initialize_head=True, head_node_args=head)
    running.trainer = running.add_node(
        num_cpus=1, resources={"trainer": 1}, node_ip_address="127.0.0.1"
    )
    running.wait_for_nodes()
    try:
        yield running
    finally:
        ray.shutdown()
        running.shutdown()


def spec_for(base: Path, dataset: Any, out: Path, **overrides: Any) -> TrainingSpec:
    values: dict[str, Any] = {
        "base_model": base,
        "dataset": dataset.path,
        "output_root": out,
        "max_steps": 6,
        "batch_size": 4,
        "max_length": 64,
        "learning_rate": 1e-3,
        "time_limit_s": 300,
    }
    values.update(overrides)
    return TrainingSpec(**values)


def peers_of_ray(pids: set[int]) -> set[str]:
    """Remote addresses of every TCP connection the cluster's processes hold."""
    out = subprocess.run(["ss", "-tnpH"], capture_output=True, text=True, check=True).stdout
    peers = set()
    for line in out.splitlines():
        if any(f"pid={pid}," in line for pid in pids):
            peers.add(line.split()[4].rsplit(":", 1)[0].strip("[]").removeprefix("::ffff:"))
    return peers


def cluster_pids(cluster: Any) -> set[int]:
    return {
        process.process.pid
        for node in cluster.list_all_nodes()
        for processes in node.all_processes.values()
        for process in processes
    }


def test_training_runs_on_the_pinned_node_and_comes_back_through_storage(
    cluster, tiny_base, dataset, tmp_path
):
    store = StoreAccess(str(tmp_path / "bucket"))
    executor = RayExecutor(cluster.address, store, resources={"trainer": 1})
    progress: list[TrainingProgress] = []
    result = executor(
        spec_for(tiny_base, dataset, tmp_path / "adapters"), on_progress=progress.append
    )

    assert result.metrics["ray_node"] == cluster.trainer.node_id  # the trainer node, pinned
    assert validate_adapter(result.adapter_path, max_rank=8, base_model=tiny_base).id
    assert result.adapter_path.parent == tmp_path / "adapters" and result.steps == 6
    steps = [p.step for p in progress if p.phase == "training"]
    print(f"{len(progress)} progress events from the worker, steps {steps}")
    assert steps and max(steps) == 6
    keys = [o.key for o in ObjectStore.open(store.url).list("training/")]
    assert any(f"/datasets/{dataset.path.name}/" in k for k in keys)
    assert any(f"/adapters/{result.adapter_path.name}/" in k for k in keys)
    peers = peers_of_ray(cluster_pids(cluster))
    print("the cluster's TCP peers:", sorted(peers))
    assert peers and all(ipaddress.ip_address(p).is_loopback for p in peers), peers


def test_a_trainer_node_that_dies_mid_run_fails_the_run_and_returns_nothing(
    cluster, tiny_base, dataset, tmp_path
):
    executor = RayExecutor(
        cluster.address, StoreAccess(str(tmp_path / "bucket")), resources={"trainer": 1}
    )
    progress: list[TrainingProgress] = []
    outcome: dict[str, Any] = {}

    def train() -> None:
        spec = spec_for(tiny_base, dataset, tmp_path / "adapters", max_steps=2000)
        try:
            outcome["result"] = executor(spec, on_progress=progress.append)
        except Exception as exc:  # any type: the assertion below names what it was
            outcome["error"] = exc

    thread = threading.Thread(target=train)
    thread.start()
    polling.wait_until(
        lambda: any(p.phase == "training" for p in progress),
        what="training steps on the worker",
        timeout_s=180,
    )
    trainer_pid = progress[-1].pid
    cluster.remove_node(cluster.trainer, allow_graceful=False)  # kill -9 of the node
    thread.join(120)
    assert not thread.is_alive()
    error = outcome.get("error")
    print("error:", repr(error))
    assert "result" not in outcome and isinstance(error, TrainingError), repr(error)
    assert "Ray training task failed" in str(error)
    assert not list((tmp_path / "adapters").glob("[!.]*"))  # no adapter to register
    polling.wait_until(  # the training subprocess died with its worker
        lambda: not running(trainer_pid),
        what="the training subprocess to die",
        timeout_s=30,
    )


@pytest.mark.parametrize("ray_cancel", ["works", "fails"])
def test_a_cancel_kills_the_ray_task_and_its_training_subprocess(
    cluster, tiny_base, dataset, tmp_path, monkeypatch, ray_cancel
):
    if ray_cancel == "fails":  # as Ray 2.60 did once in a full run: the worker stops it
        import ray

        def no_owner(*args: Any, **kwargs: Any) -> None:
            raise TypeError("No owner found for object.")

        monkeypatch.setattr(ray, "cancel", no_owner)
    executor = RayExecutor(
        cluster.address, StoreAccess(str(tmp_path / "bucket")), resources={"trainer": 1}
    )
    progress: list[TrainingProgress] = []
    cancel = threading.Event()
    outcome: dict[str, Any] = {}

    def train() -> None:
        spec = spec_for(tiny_base, dataset, tmp_path / "adapters", max_steps=2000)
        try:
            outcome["result"] = executor(spec, on_progress=progress.append, cancel=cancel)
        except Exception as exc:  # any type: the assertion below names what it was
            outcome["error"] = exc

    thread = threading.Thread(target=train)
    thread.start()
    polling.wait_until(
        lambda: any(p.phase == "training" for p in progress) or not thread.is_alive(),
        what="training steps on the worker",
        timeout_s=180,
    )
    trainer_pid = progress[-1].pid
    cancel.set()
    thread.join(60)
    assert not thread.is_alive()
    error = outcome.get("error")
    assert isinstance(error, TrainingCancelledError), repr(error)
    assert not list((tmp_path / "adapters").glob("[!.]*"))
    polling.wait_until(
        lambda: not running(trainer_pid),
        what="the training subprocess to die with its Ray worker",
        timeout_s=30,
    )
