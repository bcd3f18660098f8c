"""Captured exchanges become Arrow rows in a child process, off the proxy's interpreter.

Parsing bodies, assembling streams, redaction and building Arrow columns are pure Python: in
the proxy's process they hold the GIL that the event loop needs (about 0.1 ms per request
measured on the 2-core VM, ``benchmarks/proxy_overhead.py``). The capture writer's thread hands
each batch to ``RowBuilder.build``, which sends the raw exchanges to a child
(``python -m monitor.row_builder``) over a pipe and waits, without the GIL, for an Arrow IPC
stream back. The child runs at a lower CPU priority (``os.nice``), so where it and the proxy want
the same core the proxy wins and capture falls behind (bounded by the writer's byte budget)
instead of traffic slowing.

Frames are a 4-byte big-endian length and a pickle, over the child's stdin and stdout. The
child never sees anything but this process's own pickles. It says it is ready once its imports
are done (``startup_timeout_s``), so a batch's ``timeout_s`` measures conversion alone. A child
that dies or stops answering is killed and replaced for the next batch, and ``RowBuilderError``
tells the writer to convert this batch itself, so nothing is lost.
"""

from __future__ import annotations

import contextlib
import logging
import os
import pickle
import select
import struct
import subprocess
import sys
import threading
import time
from typing import IO, Any

import pyarrow as pa

from monitor.capture import CapturedExchange, Redact, rows_to_arrow, to_row

log = logging.getLogger(__name__)

_LENGTH = struct.Struct(">I")
_READY = b"ready"
Failure = tuple[int, str]  # the exchange's index in its batch, and why it cannot be a row


class RowBuilderError(RuntimeError):
    """The child did not answer with rows; it is restarted for the next batch."""


def convert(batch: list[CapturedExchange], redact: Redact) -> tuple[pa.Table | None, list[Failure]]:
    """Rows for every exchange that can be one; the others as (index, reason)."""
    rows, failed = [], []
    for index, exchange in enumerate(batch):
        try:
            rows.append(to_row(exchange, redact))
        except Exception as exc:
            failed.append((index, f"{type(exc).__name__}: {exc}"))
    return (rows_to_arrow(rows) if rows else None), failed


class RowBuilder:
    """Owns one child process that converts batches of exchanges into Arrow tables."""

    def __init__(
        self,
        redact: Redact,
        *,
        nice: int = 5,
        timeout_s: float = 30.0,
        startup_timeout_s: float = 60.0,
    ) -> None:
        self._redact_pickle = pickle.dumps(redact)  # a redactor that does not pickle fails here
        self._nice, self._timeout_s = nice, timeout_s
        self._startup_timeout_s = startup_timeout_s
        self._child: subprocess.Popen[bytes] | None = None
        self._lock = threading.Lock()  # one batch on the pipe at a time

    @property
    def pid(self) -> int | None:
        return None if self._child is None else self._child.pid

    def start(self) -> None:
        """Start the child now rather than at the first batch (it takes about a second)."""
        try:
            self._running_child()
        except RowBuilderError as exc:
            log.error("%s; batches are converted in the writer thread until it starts", exc)

    def build(self, batch: list[CapturedExchange]) -> tuple[pa.Table | None, list[Failure]]:
        """Convert ``batch`` in the child; ``RowBuilderError`` when it could not."""
        with self._lock:
            child = self._running_child()
            deadline = time.monotonic() + self._timeout_s
            try:
                _write_frame(child.stdin, pickle.dumps(batch, protocol=pickle.HIGHEST_PROTOCOL))
                failed, ipc = pickle.loads(_read_frame(child.stdout, deadline))
            except (OSError, EOFError, TimeoutError, pickle.UnpicklingError, ValueError) as exc:
                self._stop_child()
                raise RowBuilderError(f"the row builder process failed: {exc}") from None
        table = None if ipc is None else pa.ipc.open_stream(ipc).read_all()
        return table, failed

    def close(self) -> None:
        with self._lock:
            self._stop_child()

    def _running_child(self) -> subprocess.Popen[bytes]:
        if self._child is not None and self._child.poll() is None:
            return self._child
        if self._child is not None:
            log.error(
                "row builder process %d exited (%s); starting another",
                self._child.pid,
                self._child.returncode,
            )
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
        child = subprocess.Popen(
            [sys.executable, "-m", "monitor.row_builder", str(self._nice)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=env,
        )
        self._child = child
        try:
            _write_frame(child.stdin, self._redact_pickle)
            if _read_frame(child.stdout, time.monotonic() + self._startup_timeout_s) != _READY:
                raise ValueError("it did not say it was ready")
        except (OSError, EOFError, TimeoutError, ValueError) as exc:
            self._stop_child()
            raise RowBuilderError(f"the row builder process did not start: {exc}") from None
        return child

    def _stop_child(self) -> None:
        # The child holds nothing but the batch in hand (the writer keeps it for a retry), so
        # it is killed rather than asked: a hung child cannot hold up a shutdown.
        child, self._child = self._child, None
        if child is None:
            return
        child.kill()
        child.wait()
        for pipe in (child.stdin, child.stdout):
            if pipe is not None:
                with contextlib.suppress(OSError):
                    pipe.close()


def _write_frame(stream: IO[bytes] | None, payload: bytes) -> None:
    if stream is None:
        raise OSError("no pipe to the row builder")
    stream.write(_LENGTH.pack(len(payload)))
    stream.write(payload)
    stream.flush()


def _read_frame(stream: IO[bytes] | None, deadline: float) -> bytes:
    if stream is None:
        raise OSError("no pipe from the row builder")
    (length,) = _LENGTH.unpack(_read_exact(stream, _LENGTH.size, deadline))
    return _read_exact(stream, length, deadline)


def _read_exact(stream: IO[bytes], size: int, deadline: float) -> bytes:
    fd, parts, left = stream.fileno(), [], size
    while left:
        wait_s = None if deadline == float("inf") else max(deadline - time.monotonic(), 0.0)
        if not select.select([fd], [], [], wait_s)[0]:
            raise TimeoutError("the row builder did not answer in time")
        chunk = os.read(fd, min(left, 1 << 20))
        if not chunk:
            raise EOFError("the row builder closed its pipe")
        parts.append(chunk)
        left -= len(chunk)
    return b"".join(parts)


def _serve(stdin: IO[bytes], stdout: IO[bytes]) -> None:
    """The child's loop: one batch in, one answer out, until the parent closes the pipe."""
    forever = float("inf")
    try:
        redact: Redact = pickle.loads(_read_frame(stdin, forever))
    except EOFError:
        return
    _write_frame(stdout, _READY)
    while True:
        try:
            batch: list[Any] = pickle.loads(_read_frame(stdin, forever))
        except EOFError:
            return
        try:
            table, failed = convert(batch, redact)
        except Exception as exc:  # Arrow refused the batch: every exchange fails, named
            table, failed = None, [(i, f"{type(exc).__name__}: {exc}") for i in range(len(batch))]
        ipc = None
        if table is not None:
            sink = pa.BufferOutputStream()
            with pa.ipc.new_stream(sink, table.schema) as writer:
                writer.write_table(table)
            ipc = sink.getvalue().to_pybytes()
        _write_frame(stdout, pickle.dumps((failed, ipc), protocol=pickle.HIGHEST_PROTOCOL))


if __name__ == "__main__":
    os.nice(int(sys.argv[1]) if len(sys.argv) > 1 else 0)
    frames_out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # a stray print in the child must not corrupt a frame
    _serve(sys.stdin.buffer, frames_out)
