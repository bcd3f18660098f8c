"""Named crash points for crash tests: ``DRIFTLOOP_FAILPOINT=<name>`` kills the process there.

A real ``kill -9`` at an exact step (for example between loading an adapter into vLLM and
switching the alias) is the only honest way to test recovery from it; timing a signal from
outside would hit that window only by luck. Unset in production, the check is one dict lookup.
"""

from __future__ import annotations

import logging
import os
import signal

ENV = "DRIFTLOOP_FAILPOINT"
log = logging.getLogger(__name__)


def failpoint(name: str) -> None:
    """SIGKILL this process if the environment names this failpoint."""
    if os.environ.get(ENV) == name:
        log.critical("failpoint %s: killing process %d with SIGKILL", name, os.getpid())
        os.kill(os.getpid(), signal.SIGKILL)
