"""Giving memory back to the OS after large captures (glibc only; a no-op elsewhere).

Captured bodies of megabytes are copied several times while they become rows (decoded, parsed,
Arrow, DuckDB). glibc's malloc raises its mmap threshold after the first large free, so later
large blocks come from the heap, and freed heap stays mapped: the process keeps its peak size.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging

log = logging.getLogger(__name__)

_M_MMAP_THRESHOLD = -3  # from glibc's malloc.h
# Blocks this large are mmapped (and unmapped when freed) instead of growing the heap.
MMAP_THRESHOLD_BYTES = 1 << 20


def _libc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name)
        libc.malloc_trim  # noqa: B018 - absent outside glibc
        libc.mallopt  # noqa: B018
    except (OSError, AttributeError, TypeError):
        return None
    return libc


_LIBC = _libc()


def tune_allocator() -> bool:
    """Fix glibc's mmap threshold so large bodies are returned on free; False if not glibc."""
    if _LIBC is None:
        return False
    # A fixed threshold also stops glibc from raising it after each large free.
    return bool(_LIBC.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES))


def release_free_memory() -> None:
    """Return freed heap pages to the OS (``malloc_trim``); cheap when little is free."""
    if _LIBC is not None:
        _LIBC.malloc_trim(0)
