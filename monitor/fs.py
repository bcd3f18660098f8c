"""Files that are never seen half-written, and their sha256: the one place every package uses.

A file or folder that carries its final name is complete: it is written under a temp name in the
same folder and renamed into place (rename(2) is atomic within a file system). Temp folders are
named ``.tmp-<pid>-<random>`` so that the next writer can delete the ones whose writer died (a
crash or kill -9) without touching those of a writer still running beside it. It lives in
``monitor`` because every package may import ``monitor`` (and ``monitor`` imports nothing back).

>>> import tempfile
>>> root = Path(tempfile.mkdtemp())
>>> write_atomic(root / "report.json", b"{}")
>>> sha256_file(root / "report.json")[:12]
'44136fa355b3'
>>> [p.name for p in root.iterdir()]
['report.json']
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import re
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

_TMP_DIR = re.compile(r"^\.tmp-(?P<pid>\d+)-[0-9a-f]{8}$")
_BLOCK = 1 << 20


def sha256_file(path: Path) -> str:
    """The hex sha256 of a file, read in 1 MiB blocks (model weights do not fit in memory twice)."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        for block in iter(lambda: handle.read(_BLOCK), b""):
            digest.update(block)
    return digest.hexdigest()


@contextlib.contextmanager
def atomic_path(target: Path) -> Iterator[Path]:
    """Yield a fresh temp path next to ``target``; on success rename it onto ``target``.

    The temp name keeps ``target``'s suffix (some writers choose a format by it) and is unique,
    so concurrent writers of one target do not clash: the last rename wins. On an error the temp
    file is removed and ``target`` is left as it was.
    """
    target = Path(target)
    fd, name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.stem}-", suffix=target.suffix)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        tmp.replace(target)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def write_atomic(target: Path, data: bytes) -> None:
    """Write ``data`` to ``target`` so that a reader sees the old file or the new, never half."""
    with atomic_path(target) as tmp:
        tmp.write_bytes(data)


def new_temp_dir(root: Path) -> Path:
    """Create and return a fresh temp folder in ``root`` named after this process."""
    path = root / f".tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    path.mkdir()
    return path


def remove_stale_temp_dirs(root: Path) -> list[Path]:
    """Delete temp folders left by writers that died (their pid no longer runs)."""
    removed: list[Path] = []
    if not root.is_dir():
        return removed
    for entry in root.iterdir():
        match = _TMP_DIR.match(entry.name)
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


def fsync_dir(path: Path) -> None:
    """Flush a folder's entries to disk so that a rename survives a power cut."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def publish(tmp: Path, target: Path) -> bool:
    """Rename folder ``tmp`` to ``target``; return False (and drop ``tmp``) if ``target`` exists.

    For content-addressed folders: an existing ``target`` already holds the same content.
    """
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


def replace_dir(tmp: Path, target: Path) -> None:
    """Put folder ``tmp`` in place of ``target`` (replacing it if present), never half-written.

    The old folder is first renamed to ``.<name>.old-<random>`` and then deleted; a crash in
    between leaves that name behind for the caller's next run to remove.
    """
    if target.exists():
        retired = target.parent / f".{target.name}.old-{uuid.uuid4().hex[:8]}"
        target.rename(retired)
        tmp.rename(target)
        shutil.rmtree(retired, ignore_errors=True)
    else:
        tmp.rename(target)
