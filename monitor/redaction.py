"""Redaction of captured text before it is stored: built-in detectors plus configured regexes.

The detectors are the published token formats of the big providers (the rules gitleaks ships),
``key = value`` credential assignments, Luhn-checked card numbers (digits optionally grouped by
spaces or dashes) and email addresses. ``retrain.data.pii`` reuses them for training data, so the
sidecar and the dataset builder agree on what a secret is.

Each configured pattern is compiled on its own (a leading ``(?i)`` stays a valid global flag),
every detector and pattern reports spans over the same text, and overlapping spans are merged
before they are replaced, so one secret becomes one ``[REDACTED]`` whatever matched it.

>>> redactor = PatternRedactor([r"ticket-\\d+"], detectors=DETECTORS)
>>> redactor("key sk-proj-abcdefghij0123456789xyz, ticket-7")
'key [REDACTED], [REDACTED]'
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator

import orjson

PLACEHOLDER = "[REDACTED]"
Span = tuple[int, int]

EMAIL = re.compile(
    r"(?<![\w.+-])[A-Za-z0-9._%+-]+@[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?"
    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*\.[A-Za-z]{2,}(?![\w-])"
)
# 13-19 digits, optionally grouped by single spaces or dashes; the Luhn check decides.
# The lookbehind follows the first digit so that it runs at digits only, not at every character.
CARD_CANDIDATE = re.compile(r"\d(?<![\d-]\d)(?:[ -]?\d){12,18}(?![\d-])")
# Provider token formats (as published by the providers and collected by gitleaks).
SECRET_TOKENS = re.compile(
    "|".join(
        (
            r"-----BEGIN [A-Z ]*PRIVATE KEY-----[\s\S]*?-----END [A-Z ]*PRIVATE KEY-----",
            r"\bsk-(?:ant-|proj-|svcacct-|admin-)?[A-Za-z0-9_-]{20,}",  # OpenAI, Anthropic
            r"\b(?:AKIA|ASIA|ABIA|ACCA)[0-9A-Z]{16}\b",  # AWS access key id
            r"\bgh[pousr]_[A-Za-z0-9]{36,255}\b",  # GitHub
            r"\bgithub_pat_[A-Za-z0-9_]{22,255}\b",
            r"\bglpat-[A-Za-z0-9_-]{20,}",  # GitLab
            r"\bxox[abposr]-[A-Za-z0-9-]{10,}",  # Slack
            r"\b[rs]k_(?:live|test)_[A-Za-z0-9]{16,}\b",  # Stripe
            r"\bAIza[0-9A-Za-z_-]{35}",  # Google API key
            r"\bhf_[A-Za-z0-9]{30,}\b",  # Hugging Face
            r"\beyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}",  # JWT
        )
    )
)
# "api_key = abc123...", "password: hunter2x", "Authorization: Bearer ...": the value only.
SECRET_ASSIGNMENT = re.compile(
    r"(?i)\b(?:api[_-]?key|secret(?:[_-]?key)?|access[_-]?key|auth[_-]?token|token|password"
    r"|passwd|pwd|bearer)\b[\"']?\s*(?:[:=]|\s)\s*[\"']?(?P<value>[^\s\"',;]{8,})"
)


def luhn_valid(digits: str) -> bool:
    """Tell whether a digit string passes the Luhn checksum (as every payment card does)."""
    if not digits.isdigit():
        return False
    total = 0
    for position, char in enumerate(reversed(digits)):
        value = int(char)
        if position % 2 == 1:
            value = value * 2 - 9 if value > 4 else value * 2
        total += value
    return total % 10 == 0


def looks_like_secret(value: str) -> bool:
    """Tell whether an assigned value looks like a credential rather than a word."""
    # Placeholders such as "[SECRET]" or "<your key>" and plain words are left alone.
    if value.startswith(("[", "<", "{")):
        return False
    has_digit = any(c.isdigit() for c in value)
    has_alpha = any(c.isalpha() for c in value)
    return (has_digit and has_alpha) or len(value) >= 20


# Every token format starts with one of these literals and every assignment names one of these
# words. Substring tests run at C speed, so text that holds none of them (most chat traffic)
# skips the regexes, which try every alternative at every character.
_TOKEN_LITERALS = (
    "-----BEGIN", "sk-", "AKIA", "ASIA", "ABIA", "ACCA", "ghp_", "gho_", "ghu_", "ghs_", "ghr_",
    "github_pat_", "glpat-", "xox", "sk_", "rk_", "AIza", "hf_", "eyJ",
)  # fmt: skip
_ASSIGNMENT_WORDS = ("key", "secret", "token", "passw", "pwd", "bearer")


def secret_spans(text: str) -> Iterator[Span]:
    """Provider tokens, and the values of credential assignments."""
    if any(literal in text for literal in _TOKEN_LITERALS):
        for match in SECRET_TOKENS.finditer(text):
            yield match.span()
    lowered = text.lower()
    if any(word in lowered for word in _ASSIGNMENT_WORDS):
        for match in SECRET_ASSIGNMENT.finditer(text):
            if looks_like_secret(match.group("value")):
                yield match.span("value")


def card_spans(text: str) -> Iterator[Span]:
    """Digit runs (spaces or dashes allowed between digits) that pass the Luhn check."""
    for match in CARD_CANDIDATE.finditer(text):
        if luhn_valid(re.sub(r"[ -]", "", match.group(0))):
            yield match.span()


def email_spans(text: str) -> Iterator[Span]:
    if "@" not in text:
        return
    for match in EMAIL.finditer(text):
        yield match.span()


DETECTORS: dict[str, Callable[[str], Iterator[Span]]] = {
    "secrets": secret_spans,
    "cards": card_spans,
    "emails": email_spans,
}


MIN_DETECTED_LENGTH = 6


def compile_pattern(pattern: str) -> re.Pattern[str]:
    """Compile one redaction pattern; the error names the pattern and what is wrong with it."""
    try:
        return re.compile(pattern)
    except re.error as exc:
        raise ValueError(f"redaction pattern {pattern!r} is not a valid regex: {exc}") from None


class PatternRedactor:
    """Replaces everything the chosen detectors and the regular expressions match by ``[REDACTED]``.

    >>> PatternRedactor([r"(?i)internal-\\w+"])("see INTERNAL-wiki")
    'see [REDACTED]'
    """

    def __init__(self, patterns: Iterable[str], detectors: Iterable[str] = ()) -> None:
        self._patterns = [compile_pattern(pattern) for pattern in patterns]
        self._detectors = []
        for name in detectors:
            if name not in DETECTORS:
                known = ", ".join(DETECTORS)
                raise ValueError(f"unknown redaction detector {name!r} (known: {known})")
            self._detectors.append(DETECTORS[name])

    def spans(self, text: str) -> list[Span]:
        """Every matched span, merged where spans overlap or touch, in order."""
        found: list[Span] = []
        # Nothing a detector finds is shorter than an email such as "a@b.co"; request JSON is
        # redacted string by string, and most of its strings ("user", "stop") are shorter.
        if len(text) >= MIN_DETECTED_LENGTH:
            found = [span for detect in self._detectors for span in detect(text)]
        for pattern in self._patterns:
            # An empty match (a pattern like `x*`) redacts nothing rather than every gap.
            found.extend(m.span() for m in pattern.finditer(text) if m.end() > m.start())
        merged: list[Span] = []
        for start, end in sorted(found):
            if merged and start <= merged[-1][1]:
                merged[-1] = (merged[-1][0], max(end, merged[-1][1]))
            else:
                merged.append((start, end))
        return merged

    def __call__(self, text: str) -> str:
        if not self._patterns and not self._detectors:
            return text
        spans = self.spans(text)
        if not spans:
            return text
        pieces, last = [], 0
        for start, end in spans:
            pieces += [text[last:start], PLACEHOLDER]
            last = end
        pieces.append(text[last:])
        return "".join(pieces)


# A \uXXXX escape, or a surrogate pair of them (one character outside the BMP).
_ESCAPE = re.compile(r"\\u(d[89ab][0-9a-f]{2})\\u(d[c-f][0-9a-f]{2})|\\u([0-9a-f]{4})", re.I)


def redact_json(body: bytes, redact: Callable[[str], str]) -> str:
    """Redact every string of a JSON document (keys too) and serialise it again.

    Matching the parsed strings means a secret sent with ``\\u`` escapes cannot slip past the
    patterns. A body that is not JSON orjson accepts is redacted as text with its escapes
    decoded, so the escaped spelling of a secret is not stored either.
    """
    try:
        document = orjson.loads(body)
        return orjson.dumps(_redact_strings(document, redact)).decode()
    except (orjson.JSONDecodeError, orjson.JSONEncodeError, RecursionError):
        return redact(_ESCAPE.sub(_unescape, body.decode("utf-8", "replace")))


def _redact_strings(value: object, redact: Callable[[str], str]) -> object:
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, list):
        return [_redact_strings(item, redact) for item in value]
    if isinstance(value, dict):
        return {redact(key): _redact_strings(item, redact) for key, item in value.items()}
    return value


def _unescape(match: re.Match[str]) -> str:
    if match.group(3) is not None:
        code = int(match.group(3), 16)
        # A lone surrogate cannot be stored as UTF-8: keep its escape as written.
        return match.group(0) if 0xD800 <= code <= 0xDFFF else chr(code)
    high, low = int(match.group(1), 16), int(match.group(2), 16)
    return chr(0x10000 + ((high - 0xD800) << 10) + (low - 0xDC00))
