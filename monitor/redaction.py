"""The redaction hook applied to captured text before it is stored."""

from __future__ import annotations

import re
from collections.abc import Iterable

PLACEHOLDER = "[REDACTED]"


class PatternRedactor:
    """Replaces every match of the configured regular expressions with ``[REDACTED]``.

    >>> PatternRedactor([r"sk-[A-Za-z0-9]+"])("key sk-abc123 here")
    'key [REDACTED] here'
    """

    def __init__(self, patterns: Iterable[str]) -> None:
        compiled = []
        for pattern in patterns:
            try:
                compiled.append(re.compile(pattern))
            except re.error as exc:
                raise ValueError(
                    f"redaction pattern {pattern!r} is not a valid regex: {exc}"
                ) from exc
        self._combined = (
            re.compile("|".join(f"(?:{p.pattern})" for p in compiled)) if compiled else None
        )

    def __call__(self, text: str) -> str:
        if self._combined is None:
            return text
        return self._combined.sub(PLACEHOLDER, text)
