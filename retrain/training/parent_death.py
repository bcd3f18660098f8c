"""The training child ends when the process that started it dies (Linux), asked for by the child.

The child leads its own session, so a cancel kills its whole group; that also means a parent
killed with SIGKILL (a controller, a Ray worker whose node died) would leave it training alone.
The kernel's parent-death signal ends it instead. The child asks for it as its first step rather
than in a ``preexec_fn`` between fork and exec: that runs Python in the forked copy of a threaded
service, which the subprocess docs call unsafe, and a demo's service froze inside that ``Popen``
(2026-12-03). Without ``preexec_fn`` the parent can also spawn with vfork. The parent passes its
pid, so a parent that died before the child asked is caught as well.
"""

from __future__ import annotations

import ctypes
import os
import signal
from collections.abc import Mapping

PARENT_PID_ENV = "DRIFTLOOP_TRAINING_PARENT_PID"
PR_SET_PDEATHSIG = 1  # prctl(2)


def die_with_parent(environ: Mapping[str, str] = os.environ) -> None:
    """SIGKILL this process when its parent dies; exit now if it already has (or is not it)."""
    expected = environ.get(PARENT_PID_ENV)
    if expected is None:  # started by hand, not by the job runner
        return
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):  # not Linux: the job runner's own kill is all there is
        return
    prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != int(expected):
        raise SystemExit(f"the process that started training ({expected}) is gone")
