"""LoRA training as a Ray task on a cluster: inputs and outputs travel through object storage.

The controller uploads the dataset folder to object storage and submits one task (pinned with
``num_cpus``/``num_gpus`` and custom resources, e.g. ``{"trainer": 1}`` on the GPU node). On the
worker the task downloads and checks the dataset, runs the same niced, time-limited training
subprocess as the local executor (``run_training``), and uploads the adapter folder; the
controller downloads and validates it. The trainer never sees the controller's disk, only the
base model, which must exist at ``spec.base_model`` on the worker node.

Progress (step, loss, steps/s) comes back through a Ray queue while the task runs; the queue's
actor lives on the controller's own node, so a trainer node that dies takes the task, not the
channel that reports it (a queue lost anyway only stops progress events). The time limit
and a cancel end the task two ways at once: a message on a second queue tells the worker to kill
its training subprocess itself, and ``ray.cancel(force=True)`` kills the worker (the subprocess
dies with its parent). Either alone is enough; the first holds where ``ray.cancel`` fails (Ray
2.60 raised ``TypeError: No owner found for object.`` once, with the task still running). The
executor waits for the task to end before it reports the run killed. A worker or node that dies
mid-run ends the run with ``TrainingError`` naming Ray's reason; nothing is returned, so nothing
is registered.

Ray is imported on first use, so configurations with the local executor never load it.
"""

from __future__ import annotations

import dataclasses
import logging
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from monitor.adapter_bundles import BundleError, BundleRef, fetch, publish_folder
from monitor.object_store import ObjectStore, StoreAccess
from retrain.training.job import read_adapter, run_training
from retrain.training.spec import (
    TrainingCancelledError,
    TrainingError,
    TrainingLimits,
    TrainingProgress,
    TrainingResult,
    TrainingSpec,
    TrainingTimeoutError,
)

log = logging.getLogger(__name__)

POLL_S = 0.25
# How long a stopped task may take to end (the worker polls its stop queue every POLL_S).
STOP_GRACE_S = 30.0


@dataclass
class RayExecutor:
    """``run_training``'s signature, on a Ray cluster at ``address``."""

    address: str
    store: StoreAccess
    num_cpus: float = 1.0
    num_gpus: float = 0.0
    resources: Mapping[str, float] = field(default_factory=dict)
    _connected: bool = False
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __call__(
        self,
        spec: TrainingSpec,
        *,
        limits: TrainingLimits | None = None,
        on_progress: Callable[[TrainingProgress], None] | None = None,
        cancel: threading.Event | None = None,
    ) -> TrainingResult:
        import ray
        from ray.util.queue import Empty, Queue

        spec.check_limits(limits or TrainingLimits())
        started = time.monotonic()
        objects = self.store.open()
        run_key = f"training/{time.strftime('%Y-%m-%d')}/{uuid.uuid4().hex[:16]}"
        try:
            # Under its own content-addressed name: the folder name is the dataset id.
            dataset = publish_folder(
                objects, lambda _: f"{run_key}/datasets/{spec.dataset.name}", spec.dataset
            )
            reference = spec.reference_adapter  # a DPO run's production adapter travels too
            if reference is not None:
                reference_ref: dict[str, str] | None = publish_folder(
                    objects, lambda _: f"{run_key}/reference/{reference.name}", reference
                ).as_dict()
            else:
                reference_ref = None
        except BundleError as exc:
            raise TrainingError(f"cannot hand the dataset to Ray: {exc}") from exc
        self._connect()
        on_controller = {"num_cpus": 0, "scheduling_strategy": on_this_node()}
        progress, stop = Queue(actor_options=on_controller), Queue(actor_options=on_controller)
        task = ray.remote(train_on_worker).options(
            num_cpus=self.num_cpus,
            num_gpus=self.num_gpus,
            resources=dict(self.resources),
            max_retries=0,  # a run that died is failed and named, not silently run twice
        )
        ref = task.remote(spec.to_json(), dataset.as_dict(), dataclasses.asdict(self.store),
                          run_key, progress, stop, reference_ref)  # fmt: skip
        log.info("training submitted to Ray at %s as %s (%s)", self.address, run_key, ref)
        deadline = started + spec.time_limit_s
        try:
            while not ray.wait([ref], timeout=POLL_S)[0]:
                self._relay(progress, Empty, on_progress)
                if cancel is not None and cancel.is_set():
                    self._stop(ref, stop)
                    raise TrainingCancelledError("training was cancelled (Ray task killed)")
                if time.monotonic() > deadline:
                    self._stop(ref, stop)
                    raise TrainingTimeoutError(
                        f"training exceeded its time limit of {spec.time_limit_s:g} s on Ray"
                        " and was killed"
                    )
            self._relay(progress, Empty, on_progress)
            out = ray.get(ref)
        except ray.exceptions.RayError as exc:  # the task's, its worker's or its node's death
            raise TrainingError(f"Ray training task failed: {ray_reason(exc)}") from None
        finally:
            for queue in (progress, stop):
                try:
                    ray.kill(queue.actor)  # type: ignore[arg-type]  # an ActorHandle at run time
                except ray.exceptions.RayError as exc:  # must not hide how the run ended
                    log.warning("a training queue actor could not be stopped: %s", exc)
        return self._result(objects, out, spec, time.monotonic() - started)

    def _stop(self, ref: Any, stop: Any) -> None:
        """End the task: its worker kills the training subprocess, and Ray kills the worker."""
        import ray

        try:
            stop.put_nowait("stop")
        except ray.exceptions.RayError as exc:
            log.warning("the stop message could not reach the Ray worker: %s", ray_reason(exc))
        try:
            ray.cancel(ref, force=True)
        except Exception as exc:  # TypeError/ValueError from the core worker, not a RayError
            log.warning("ray.cancel failed (%s: %s); the worker stops training itself",
                        type(exc).__name__, exc)  # fmt: skip
        if not ray.wait([ref], timeout=STOP_GRACE_S)[0]:
            log.warning("the Ray training task had not ended %g s after being stopped",
                        STOP_GRACE_S)  # fmt: skip

    def _connect(self) -> None:
        import ray

        with self._lock:
            if not ray.is_initialized():
                ray.init(address=self.address, log_to_driver=False, logging_level=logging.WARNING)

    def _relay(
        self,
        progress: Any,
        empty: type[Exception],
        on_progress: Callable[[TrainingProgress], None] | None,
    ) -> None:
        import ray

        while True:
            try:
                event = progress.get_nowait()
            except empty:
                return
            except ray.exceptions.RayError as exc:  # the queue's actor died: progress is lost,
                log.warning("training progress from Ray lost: %s", ray_reason(exc))
                return  # the task's own outcome still comes from ray.get
            if on_progress is not None:
                on_progress(TrainingProgress(**event))

    def _result(
        self, objects: ObjectStore, out: dict[str, Any], spec: TrainingSpec, wall: float
    ) -> TrainingResult:
        ref = BundleRef(out["adapter"]["key"], out["adapter"]["digest"])
        try:  # into <output_root>/<adapter id>, as the local executor publishes it
            target = fetch(objects, ref, spec.output_root)
        except BundleError as exc:
            raise TrainingError(f"the trained adapter could not be fetched: {exc}") from exc
        info, metrics = read_adapter(target, spec, pid=0)
        log.info("Ray training finished in %.1f s on node %s: %s", wall, out["node"], target)
        extra = {"ray_node": out["node"], "object_key": ref.key}
        return TrainingResult.of(target, info, {**metrics, **extra}, wall)


def on_this_node() -> Any:
    """Ray scheduling that keeps an actor on the node this driver is connected to (soft: any
    node when that one cannot take it)."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    return NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=True)


def ray_reason(exc: BaseException) -> str:
    """What went wrong, in one line: the task's own exception, or Ray's (a worker or node died)."""
    cause = getattr(exc, "cause", None)  # RayTaskError wraps what the task raised
    if isinstance(cause, BaseException):
        exc = cause
    lines = [line for line in str(exc).strip().splitlines() if line.strip()]
    text = next((line for line in lines if not line.lstrip().startswith("\x1b")), repr(exc))
    return f"{type(exc).__name__}: {text[:500]}"


def train_on_worker(
    spec_json: str,
    dataset: dict[str, str],
    store: dict[str, str],
    run_key: str,
    progress: Any,
    stop: Any,
    reference: dict[str, str] | None = None,
) -> dict[str, Any]:
    """The Ray task: fetch the dataset (and a DPO run's reference adapter), train in a
    subprocess (killed when a message arrives on ``stop``), publish the adapter."""
    import ray

    objects = StoreAccess(**store).open()
    with tempfile.TemporaryDirectory(prefix="driftloop-ray-train-") as scratch:
        root = Path(scratch)
        local = fetch(objects, BundleRef(dataset["key"], dataset["digest"]), root / "datasets")
        spec = dataclasses.replace(
            TrainingSpec.from_json(spec_json), dataset=local, output_root=root / "adapters"
        )
        if reference is not None:
            ref = BundleRef(reference["key"], reference["digest"])
            spec = dataclasses.replace(spec, reference_adapter=fetch(objects, ref, root / "ref"))
        cancel, done = threading.Event(), threading.Event()
        watcher = threading.Thread(target=_watch_stop, args=(stop, cancel, done), daemon=True)
        watcher.start()
        try:
            result = run_training(
                spec,
                on_progress=lambda p: progress.put_nowait(dataclasses.asdict(p)),
                cancel=cancel,
            )
        finally:
            done.set()
        adapter = publish_folder(
            objects, lambda _: f"{run_key}/adapters/{result.adapter_path.name}", result.adapter_path
        )
    return {"adapter": adapter.as_dict(), "node": ray.get_runtime_context().get_node_id()}


def _watch_stop(stop: Any, cancel: threading.Event, done: threading.Event) -> None:
    """On the worker: set ``cancel`` once the controller puts a stop message on its queue."""
    import ray
    from ray.util.queue import Empty

    while not done.is_set():
        try:
            stop.get(timeout=POLL_S)
        except Empty:
            continue
        except ray.exceptions.RayError:  # the controller's queue is gone: so is its driver
            return
        cancel.set()
        return
