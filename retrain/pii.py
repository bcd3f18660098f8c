"""PII scrubbing for training data: emails, phone numbers, card numbers and secrets.

Why this mix rather than one library:

- Phone numbers use ``phonenumbers`` (Google's libphonenumber, metadata updated monthly). Phone
  numbers are the one kind where a regex is hopeless: formats differ per country and a bare
  regex flags every order number. ``PhoneNumberMatcher`` at ``Leniency.VALID`` only reports
  numbers that are valid in a numbering plan, for the configured regions (plus any number
  written in international ``+CC`` form).
- Emails, card numbers and secrets use the regexes below. Presidio needs spaCy and a language
  model download (not possible offline here, and heavy for a sidecar host); scrubadub (last
  release 2023) pulls in textblob/nltk, detects cards without a Luhn check and has no API-key
  detector; detect-secrets scans files line by line and, used on free text, reports every
  word as a "high entropy string" without spans. Emails are a regular language for our
  purpose, cards are a digit run that passes the Luhn check, and secrets follow the published
  token formats of the big providers (the same rules gitleaks and detect-secrets ship) plus
  ``key = value`` assignments.

Matches are replaced by ``[EMAIL]``, ``[PHONE]``, ``[CARD]`` and ``[SECRET]`` so that the
training text keeps its shape; the counts per kind go into the dataset manifest.

>>> scrub_text("mail bob@example.com, card 4111 1111 1111 1111").text
'mail [EMAIL], card [CARD]'
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

import phonenumbers

KINDS = ("secret", "email", "card", "phone")
PLACEHOLDERS = {kind: f"[{kind.upper()}]" for kind in KINDS}
# Regions whose national formats are recognised without a +CC prefix. Each region adds a pass
# over the text; a false positive only costs a redacted number, a miss leaks one.
DEFAULT_PHONE_REGIONS = ("US", "GB", "DE", "FR")

EMAIL = re.compile(
    r"(?<![\w.+-])[A-Za-z0-9._%+-]+@[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?"
    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*\.[A-Za-z]{2,}(?![\w-])"
)
# 13-19 digits, optionally grouped by single spaces or dashes; the Luhn check decides.
CARD_CANDIDATE = re.compile(r"(?<![\d-])\d(?:[ -]?\d){12,18}(?![\d-])")
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


@dataclass
class ScrubResult:
    """A scrubbed text and how many spans of each kind were replaced."""

    text: str
    counts: Counter[str] = field(default_factory=Counter)


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


def _looks_like_secret(value: str) -> bool:
    """Tell whether an assigned value looks like a credential rather than a word."""
    # Placeholders such as "[SECRET]" or "<your key>" and plain words are left alone.
    if value.startswith(("[", "<", "{")):
        return False
    has_digit = any(c.isdigit() for c in value)
    has_alpha = any(c.isalpha() for c in value)
    return (has_digit and has_alpha) or len(value) >= 20


def _scrub_secrets(text: str, counts: Counter[str]) -> str:
    def token(match: re.Match[str]) -> str:
        counts["secret"] += 1
        return PLACEHOLDERS["secret"]

    text = SECRET_TOKENS.sub(token, text)

    def assignment(match: re.Match[str]) -> str:
        value = match.group("value")
        if not _looks_like_secret(value):
            return match.group(0)
        counts["secret"] += 1
        start = match.start("value") - match.start()
        return match.group(0)[:start] + PLACEHOLDERS["secret"]

    return SECRET_ASSIGNMENT.sub(assignment, text)


def _scrub_emails(text: str, counts: Counter[str]) -> str:
    def replace(match: re.Match[str]) -> str:
        counts["email"] += 1
        return PLACEHOLDERS["email"]

    return EMAIL.sub(replace, text)


def _scrub_cards(text: str, counts: Counter[str]) -> str:
    def replace(match: re.Match[str]) -> str:
        digits = re.sub(r"[ -]", "", match.group(0))
        if not luhn_valid(digits):
            return match.group(0)
        counts["card"] += 1
        return PLACEHOLDERS["card"]

    return CARD_CANDIDATE.sub(replace, text)


def _scrub_phones(text: str, counts: Counter[str], regions: Sequence[str]) -> str:
    # Region None still finds numbers written with a +CC prefix.
    for region in (*regions, None):
        spans = [
            (match.start, match.end)
            for match in phonenumbers.PhoneNumberMatcher(
                text, region, leniency=phonenumbers.Leniency.VALID
            )
        ]
        for start, end in reversed(spans):
            counts["phone"] += 1
            text = text[:start] + PLACEHOLDERS["phone"] + text[end:]
    return text


def scrub_text(text: str, *, phone_regions: Sequence[str] = DEFAULT_PHONE_REGIONS) -> ScrubResult:
    """Replace emails, phone numbers, Luhn-valid card numbers and secrets in ``text``."""
    counts: Counter[str] = Counter()
    # Secrets first (a token can contain digit runs and '@'), then emails (their digits must
    # not be read as phones), then cards (a card number can parse as a phone number).
    text = _scrub_secrets(text, counts)
    text = _scrub_emails(text, counts)
    text = _scrub_cards(text, counts)
    text = _scrub_phones(text, counts, phone_regions)
    return ScrubResult(text, counts)
