"""PII scrubbing for training data: emails, phone numbers, card numbers and secrets.

Why this mix rather than one library:

- Phone numbers use ``phonenumbers`` (Google's libphonenumber, metadata updated monthly). Phone
  numbers are the one kind where a regex is hopeless: formats differ per country and a bare
  regex flags every order number. ``PhoneNumberMatcher`` at ``Leniency.VALID`` only reports
  numbers that are valid in a numbering plan, for the configured regions (plus any number
  written in international ``+CC`` form).
- Emails, card numbers and secrets use the regexes of ``monitor.redaction`` (the sidecar
  redacts with the same ones). Presidio needs spaCy and a language model download (not
  possible offline here, and heavy for a sidecar host); scrubadub (last release 2023) pulls
  in textblob/nltk, detects cards without a Luhn check and has no API-key detector;
  detect-secrets scans files line by line and, used on free text, reports every word as a
  "high entropy string" without spans. Emails are a regular language for our purpose, cards
  are a digit run that passes the Luhn check, and secrets follow the published token formats
  of the big providers (the same rules gitleaks and detect-secrets ship) plus ``key = value``
  assignments.

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

# One definition of what a secret, a card and an email are, shared with the capture sidecar.
from monitor.redaction import (
    CARD_CANDIDATE,
    EMAIL,
    SECRET_ASSIGNMENT,
    SECRET_TOKENS,
    looks_like_secret,
    luhn_valid,
)

KINDS = ("secret", "email", "card", "phone")
PLACEHOLDERS = {kind: f"[{kind.upper()}]" for kind in KINDS}
# Regions whose national formats are recognised without a +CC prefix. Each region adds a pass
# over the text; a false positive only costs a redacted number, a miss leaks one.
DEFAULT_PHONE_REGIONS = ("US", "GB", "DE", "FR")


@dataclass
class ScrubResult:
    """A scrubbed text and how many spans of each kind were replaced."""

    text: str
    counts: Counter[str] = field(default_factory=Counter)


def _scrub_secrets(text: str, counts: Counter[str]) -> str:
    def token(match: re.Match[str]) -> str:
        counts["secret"] += 1
        return PLACEHOLDERS["secret"]

    text = SECRET_TOKENS.sub(token, text)

    def assignment(match: re.Match[str]) -> str:
        value = match.group("value")
        if not looks_like_secret(value):
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
