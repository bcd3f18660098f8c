"""Looking at the training subprocesses a test started: which exist, and whether one still runs."""

from __future__ import annotations

import subprocess
from pathlib import Path


def running(pid: int) -> bool:
    """The process exists and is not a zombie (killed, waiting to be reaped by init)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except FileNotFoundError:  # gone, or reaped between two looks
        return False


def training_children(parent_pid: int) -> set[int]:
    """The training subprocesses (``retrain.training.train``) whose parent is ``parent_pid``."""
    out = subprocess.run(["ps", "-eo", "pid,ppid,args"], capture_output=True, text=True).stdout
    return {
        int(pid)
        for pid, ppid, args in (line.split(maxsplit=2) for line in out.splitlines()[1:])
        if int(ppid) == parent_pid and "retrain.training.train" in args
    }
