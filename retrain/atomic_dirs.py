"""Atomic, content-addressed folders: write under a temp name, fsync, rename into place.

A folder that carries its final name is therefore always complete. Temp folders are named
``.tmp-<pid>-<random>`` so that the next writer can delete the ones whose writer died (a crash
or kill -9) without touching those of a writer still running beside it.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import shutil
import uuid
from pathlib import Path

_TMP = re.compile(r"^\.tmp-(?P<pid>\d+)-[0-9a-f]{8}$")


def remove_stale_temp_dirs(root: Path) -> list[Path]:
    """Delete temp folders left by writers that died (their pid no longer runs)."""
    removed: list[Path] = []
    if not root.is_dir():
        return removed
    for entry in root.iterdir():
        match = _TMP.match(entry.name)
        if match and entry.is_dir() and not _pid_alive(int(match["pid"])):
            shutil.rmtree(entry, ignore_errors=True)
            removed.append(entry)
    return removed


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def new_temp_dir(root: Path) -> Path:
    """Create and return a fresh temp folder in ``root`` named after this process."""
    path = root / f".tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    path.mkdir()
    return path


def fsync_dir(path: Path) -> None:
    """Flush a folder's entries to disk so that a rename survives a power cut."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def publish(tmp: Path, target: Path) -> bool:
    """Rename ``tmp`` to ``target``; return False (and drop ``tmp``) if ``target`` exists."""
    try:
        os.rename(tmp, target)
    except OSError as exc:
        # rename(2) refuses a non-empty target with ENOTEMPTY (or EEXIST): someone published
        # the same content first, which is fine for a content-addressed folder.
        if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST):
            raise
        shutil.rmtree(tmp, ignore_errors=True)
        return False
    with contextlib.suppress(OSError):
        fsync_dir(target.parent)
    return True
