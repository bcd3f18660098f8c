"""Run LoRA training in a niced subprocess with a time limit; the parent side of retrain.training.train.

The parent never imports torch: it writes the TrainingSpec as JSON, starts
``python -m retrain.training.train <spec.json>`` in its own process group with bounded thread counts,
reads the child's progress lines, kills the whole group when the time limit passes or the
caller cancels, and on success validates the adapter folder the child published.

Training needs torch and a base model, so this is not a doctest::

    result = run_training(
        TrainingSpec(base_model=base_dir, dataset=dataset.path, output_root=Path("adapters")),
        on_progress=lambda p: print(p.step, p.loss),
    )
    result.adapter_path  # PosixPath('adapters/3f2a9c0d1e4b5a67')
"""

from __future__ import annotations

import collections
import contextlib
import json
import logging
import os
import queue
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from monitor.fs import remove_stale_temp_dirs
from retrain.training.adapters import RESULT_FILE, AdapterError, AdapterInfo, validate_adapter
from retrain.training.parent_death import PARENT_PID_ENV
from retrain.training.spec import (
    EVENT_PREFIX,
    TrainingCancelledError,
    TrainingError,
    TrainingLimits,
    TrainingProgress,
    TrainingResult,
    TrainingSpec,
    TrainingTimeoutError,
)

# The spec types live in retrain.training.spec; importing them from here keeps working.
__all__ = [
    "EVENT_PREFIX",
    "TrainingCancelledError",
    "TrainingError",
    "TrainingLimits",
    "TrainingProgress",
    "TrainingResult",
    "TrainingSpec",
    "TrainingTimeoutError",
    "child_environment",
    "run_training",
]

log = logging.getLogger(__name__)

_REPO_ROOT = Path(__file__).resolve().parents[2]


def child_environment(threads: int, base: Mapping[str, str] | None = None) -> dict[str, str]:
    """Return the child's environment: bounded BLAS/OpenMP threads, offline hubs, unbuffered."""
    env = dict(os.environ if base is None else base)
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        env[name] = str(threads)
    env.update(
        TOKENIZERS_PARALLELISM="false",
        HF_HUB_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
        HF_DATASETS_OFFLINE="1",
        PYTHONUNBUFFERED="1",
    )
    env[PARENT_PID_ENV] = str(os.getpid())
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(_REPO_ROOT), env.get("PYTHONPATH")]))
    return env


def _parse_event(line: str) -> dict[str, Any] | None:
    if not line.startswith(EVENT_PREFIX):
        return None
    try:
        event = json.loads(line[len(EVENT_PREFIX) :])
    except ValueError:
        return None
    return event if isinstance(event, dict) else None


def _kill_group(process: subprocess.Popen[str]) -> None:
    """SIGKILL the child's whole process group (it leads its own session) and reap it."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=30)


def _describe_exit(code: int) -> str:
    if code < 0:
        with contextlib.suppress(ValueError):
            return f"killed by {signal.Signals(-code).name}"
    return f"exit code {code}"


def run_training(
    spec: TrainingSpec,
    *,
    limits: TrainingLimits | None = None,
    on_progress: Callable[[TrainingProgress], None] | None = None,
    cancel: threading.Event | None = None,
    python: str = sys.executable,
    tail_lines: int = 40,
) -> TrainingResult:
    """Train ``spec`` in a subprocess and return the validated adapter, or raise TrainingError."""
    spec.check_limits(limits or TrainingLimits())
    _prepare_output_root(spec.output_root)
    tail: collections.deque[str] = collections.deque(maxlen=tail_lines)
    started = time.monotonic()
    deadline = started + spec.time_limit_s
    process, events = _run_child(spec, python, deadline, cancel, on_progress, tail)
    wall = time.monotonic() - started
    result = _reported_result(process, events, tail)
    adapter_path = Path(result["adapter"])
    info, metrics = read_adapter(adapter_path, spec, process.pid)
    log.info("training finished in %.1f s: %s", wall, adapter_path)
    return TrainingResult.of(adapter_path, info, metrics, wall)


def _prepare_output_root(output_root: Path) -> None:
    """Create the adapters folder and remove temp folders a killed run left there."""
    output_root.mkdir(parents=True, exist_ok=True)
    for leftover in remove_stale_temp_dirs(output_root):
        log.info("removed leftover training folder %s", leftover)


def _run_child(
    spec: TrainingSpec,
    python: str,
    deadline: float,
    cancel: threading.Event | None,
    on_progress: Callable[[TrainingProgress], None] | None,
    tail: collections.deque[str],
) -> tuple[subprocess.Popen[str], list[dict[str, Any]]]:
    """Start the child in its own session on a spec file, relay it, and never leave it running."""
    with tempfile.TemporaryDirectory(prefix="driftloop-train-") as scratch:
        spec_path = Path(scratch) / "spec.json"
        spec_path.write_text(spec.to_json())
        process = subprocess.Popen(
            [python, "-m", "retrain.training.train", str(spec_path)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            bufsize=1,
            env=child_environment(spec.threads),
            cwd=scratch,
            start_new_session=True,  # no preexec_fn: the child asks for parent death itself
        )
        log.info("training subprocess %d started for %s", process.pid, spec.dataset)
        try:
            events = _pump(process, spec, deadline, cancel, on_progress, tail)
        finally:
            if process.poll() is None:
                _kill_group(process)
            # A killed child leaves its temp folder; remove it now rather than on the next run.
            remove_stale_temp_dirs(spec.output_root)
    return process, events


def _reported_result(
    process: subprocess.Popen[str], events: list[dict[str, Any]], tail: collections.deque[str]
) -> dict[str, Any]:
    """Return the child's result event, or raise TrainingError naming its exit and last lines."""
    code = process.returncode
    error = next((e.get("message") for e in events if e.get("event") == "error"), None)
    result = next((e for e in events if e.get("event") == "result"), None)
    if code != 0 or result is None:
        reason = error or "no result reported"
        raise TrainingError(
            f"training subprocess failed ({_describe_exit(code)}): {reason}; last output:\n"
            + "\n".join(tail),
            exit_code=code,
            last_lines=tail,
            pid=process.pid,
        )
    return result


def read_adapter(
    adapter_path: Path, spec: TrainingSpec, pid: int
) -> tuple[AdapterInfo, dict[str, Any]]:
    """Validate the published adapter and read its result.json; raise TrainingError if unusable."""
    try:
        info = validate_adapter(adapter_path, max_rank=spec.rank, base_model=spec.base_model)
        metrics = json.loads((adapter_path / RESULT_FILE).read_text())
    except (AdapterError, OSError, ValueError) as exc:
        raise TrainingError(
            f"training produced an unusable adapter: {exc}", exit_code=0, pid=pid
        ) from exc
    return info, metrics


def _pump(
    process: subprocess.Popen[str],
    spec: TrainingSpec,
    deadline: float,
    cancel: threading.Event | None,
    on_progress: Callable[[TrainingProgress], None] | None,
    tail: collections.deque[str],
) -> list[dict[str, Any]]:
    """Relay the child's output until it exits; kill it on timeout or cancel."""
    lines: queue.Queue[str | None] = queue.Queue()

    def read() -> None:
        assert process.stdout is not None  # set by Popen(stdout=PIPE)
        for line in process.stdout:
            lines.put(line.rstrip("\n"))
        lines.put(None)

    reader = threading.Thread(target=read, name=f"train-{process.pid}-stdout", daemon=True)
    reader.start()
    events: list[dict[str, Any]] = []
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            _kill_group(process)
            raise TrainingTimeoutError(
                f"training exceeded its time limit of {spec.time_limit_s:g} s and was killed; "
                "last output:\n" + "\n".join(tail),
                exit_code=process.returncode,
                last_lines=tail,
                pid=process.pid,
            )
        if cancel is not None and cancel.is_set():
            _kill_group(process)
            raise TrainingCancelledError(
                "training was cancelled",
                exit_code=process.returncode,
                last_lines=tail,
                pid=process.pid,
            )
        try:
            line = lines.get(timeout=min(remaining, 0.25))
        except queue.Empty:
            continue
        if line is None:
            break
        event = _parse_event(line)
        if event is None:
            tail.append(line)
            log.debug("train[%d] %s", process.pid, line)
            continue
        events.append(event)
        _report(process.pid, event, on_progress, tail)
    reader.join(timeout=5)
    process.wait()
    return events


def _report(
    pid: int,
    event: Mapping[str, Any],
    on_progress: Callable[[TrainingProgress], None] | None,
    tail: collections.deque[str],
) -> None:
    kind = event.get("event")
    if kind == "error":
        tail.append(f"error: {event.get('message')}")
        return
    if kind not in ("phase", "progress"):
        return
    progress = TrainingProgress(
        pid=pid,
        phase=str(event.get("phase", "training")),
        step=int(event.get("step", 0)),
        max_steps=int(event.get("max_steps", 0)),
        loss=event.get("loss"),
        learning_rate=event.get("learning_rate"),
        steps_per_second=event.get("steps_per_second"),
        elapsed_s=float(event.get("elapsed_s", 0.0)),
    )
    if kind == "progress":
        log.info(
            "train step %d/%d loss %s %.2f steps/s",
            progress.step,
            progress.max_steps,
            progress.loss,
            progress.steps_per_second or 0.0,
        )
    else:
        log.info("training phase: %s", progress.phase)
    if on_progress is not None:
        on_progress(progress)
