"""Sessions: rows of one conversation are correlated, so calibration moves whole sessions.

Neighbouring prompts of one conversation are far more alike than random pairs. A permutation
null that shuffles rows treats them as independent and, on real multi-turn traffic, alarmed on
95-100% of no-drift window pairs. Shuffling whole sessions between the windows (a cluster
permutation) keeps each conversation's rows together, so the null is right when rows within a
session are correlated and unchanged when every session has one row.

A unit is a (window, session) pair: a conversation that straddles the window boundary counts as
two units, which makes the windows look *more* alike than chance (conservative).

>>> import numpy as np
>>> codes = session_codes(["a", "a", None, "b"])
>>> codes.tolist(), unit_count(codes)
([0, 0, 1, 2], 3)
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray


def session_codes(
    keys: Sequence[Hashable | None] | None, rows: int | None = None
) -> NDArray[np.intp]:
    """Unit ids 0..G-1 per row, in order of first appearance; None (or no keys) is its own unit."""
    if keys is None:
        if rows is None:
            raise ValueError("session_codes needs keys or a row count")
        return np.arange(rows, dtype=np.intp)
    if rows is not None and len(keys) != rows:
        raise ValueError(f"got {len(keys)} session keys for {rows} rows")
    seen: dict[Hashable, int] = {}
    codes = np.empty(len(keys), dtype=np.intp)
    for i, key in enumerate(keys):
        if key is None:
            codes[i] = len(seen)
            seen[("__row__", i)] = codes[i]
        else:
            codes[i] = seen.setdefault(key, len(seen))
    return codes


def check_codes(name: str, codes: ArrayLike, rows: int) -> NDArray[np.intp]:
    """Validate unit ids for ``rows`` rows: integers 0..G-1, every id used."""
    array = np.asarray(codes)
    if array.shape != (rows,):
        raise ValueError(f"{name} sessions must give one id per row ({rows}), got {array.shape}")
    if rows and (not np.issubdtype(array.dtype, np.integer) or array.min() < 0):
        raise ValueError(f"{name} session ids must be integers >= 0")
    array = array.astype(np.intp)
    if rows and len(np.unique(array)) != array.max() + 1:
        _, array = np.unique(array, return_inverse=True)
    return array.astype(np.intp)


def unit_count(codes: NDArray[np.intp]) -> int:
    """Number of units (sessions) among these codes."""
    return int(codes.max()) + 1 if len(codes) else 0


MIN_SESSIONS = 2  # below this a window's rows are one correlated unit: nothing to permute


def too_few_sessions(sessions: tuple[NDArray[np.intp], NDArray[np.intp]] | None) -> str | None:
    """Why a session-calibrated test cannot run on these windows, or None when it can.

    >>> too_few_sessions((np.array([0, 1]), np.array([0, 0, 0])))
    'the current window is 1 session (3 rows of one conversation); a test needs >= 2 per window'
    """
    if sessions is None:
        return None
    for window, codes in zip(("reference", "current"), sessions, strict=True):
        units = unit_count(codes)
        if len(codes) and units < MIN_SESSIONS:
            return (
                f"the {window} window is {units} session ({len(codes)} rows of one conversation);"
                f" a test needs >= {MIN_SESSIONS} per window"
            )
    return None


def unit_sums(values: NDArray[np.floating], codes: NDArray[np.intp]) -> NDArray[np.float64]:
    """Per-unit sums of the rows of ``values`` (rows, ...) by unit id, as float64."""
    order = np.argsort(codes, kind="stable")
    sorted_codes = codes[order]
    starts = np.flatnonzero(np.r_[True, sorted_codes[1:] != sorted_codes[:-1]])
    return np.add.reduceat(values[order].astype(np.float64), starts, axis=0)


def design_effect(centred: NDArray[np.floating], codes: NDArray[np.intp]) -> float:
    """Variance of a window mean with sessions over its variance with independent rows (>= 1).

    ``Σ_g ‖s_g‖² / Σ_i ‖x_i‖²`` for centred rows ``x_i`` and session sums ``s_g``: 1 when rows
    within a session are uncorrelated, the mean session size when they are identical. The
    effective sample size is ``n / design_effect``. Below 1 (sessions anti-correlated, or noise)
    it is reported as 1: a window never counts as more rows than it holds.
    """
    rows = float(np.einsum("nd,nd->", centred, centred, dtype=np.float64))
    if rows <= 0:
        return 1.0
    sums = unit_sums(centred, codes)
    return max(1.0, float(np.einsum("gd,gd->", sums, sums)) / rows)


@dataclass(frozen=True)
class SessionCounts:
    """Per-bin counts of each multi-row session of both windows, so a null moves them whole."""

    reference: NDArray[np.int64]  # (sessions with >= 2 rows in the reference, bins)
    current: NDArray[np.int64]

    @property
    def empty(self) -> bool:
        """True when every session has one row (the row-level null is then exact)."""
        return len(self.reference) + len(self.current) == 0


def multi_row_counts(bins: NDArray[np.intp], codes: NDArray[np.intp], k: int) -> NDArray[np.int64]:
    """(sessions with >= 2 rows, k) bin counts of those sessions."""
    sizes = np.bincount(codes)
    multi = np.flatnonzero(sizes >= 2)
    if len(multi) == 0:
        return np.zeros((0, k), dtype=np.int64)
    index = np.full(len(sizes), -1, dtype=np.intp)
    index[multi] = np.arange(len(multi))
    keep = index[codes] >= 0
    out = np.zeros((len(multi), k), dtype=np.int64)
    np.add.at(out, (index[codes[keep]], bins[keep]), 1)
    return out


def session_counts(
    reference_bins: ArrayLike,
    current_bins: ArrayLike,
    reference_codes: ArrayLike,
    current_codes: ArrayLike,
    k: int,
) -> SessionCounts:
    """The multi-row sessions' bin counts for rows binned into ``k`` bins (cluster, value, flag)."""
    ref_bins = np.asarray(reference_bins, dtype=np.intp)
    cur_bins = np.asarray(current_bins, dtype=np.intp)
    ref_codes = check_codes("reference", reference_codes, len(ref_bins))
    cur_codes = check_codes("current", current_codes, len(cur_bins))
    return SessionCounts(
        multi_row_counts(ref_bins, ref_codes, k), multi_row_counts(cur_bins, cur_codes, k)
    )


def count_design_effect(sessions: SessionCounts, totals: ArrayLike) -> float:
    """``design_effect`` of the bin shares (one-hot rows), from the multi-row sessions' counts.

    One-row sessions contribute what independent rows do, so only the multi-row ones change the
    sum: ``Σ_g ‖c_g − m_g·p‖²`` replaces their rows' ``m_g·(1 − Σp²)``.
    """
    counts = np.asarray(totals, dtype=np.float64)
    rows = float(counts.sum())
    if rows == 0:
        return 1.0
    shares = counts / rows
    spread = 1 - float(shares @ shares)
    if spread <= 0:
        return 1.0
    blocks = np.concatenate([sessions.reference, sessions.current]).astype(np.float64)
    sizes = blocks.sum(axis=1)
    within = float(((blocks - sizes[:, None] * shares) ** 2).sum())
    total = rows * spread - float(sizes.sum()) * spread + within
    return max(1.0, total / (rows * spread))
