"""Reference metrics for golden sets: plain functions ``(prediction, reference) -> float in [0, 1]``.

Exact match and token F1 follow the SQuAD evaluation (lower case, no punctuation, no articles);
ROUGE-L is Google's ``rouge-score`` (LCS F-measure) with a Unicode word tokenizer, because its
default one drops every non-ASCII letter.

>>> exact_match("The Eiffel Tower.", "eiffel tower")
1.0
>>> round(token_f1("Paris, France", "Paris"), 3)
0.667
>>> rouge_l("the cat sat on the mat", "the cat is on the mat") > 0.8
True
"""

from __future__ import annotations

import re
import string
import unicodedata
from collections import Counter
from collections.abc import Callable
from functools import lru_cache
from typing import Any

ReferenceMetric = Callable[[str, str], float]
REFERENCE_METRICS: dict[str, ReferenceMetric] = {}

ARTICLES = re.compile(r"\b(a|an|the)\b", re.IGNORECASE)
WORD = re.compile(r"\w+", re.UNICODE)


def register_metric(name: str) -> Callable[[ReferenceMetric], ReferenceMetric]:
    """Make a reference metric available by name (for the golden-set gate's configuration)."""

    def add(fn: ReferenceMetric) -> ReferenceMetric:
        if name in REFERENCE_METRICS:
            raise ValueError(f"reference metric {name!r} is already registered")
        REFERENCE_METRICS[name] = fn
        return fn

    return add


def normalize(text: str) -> str:
    """SQuAD answer normalisation: lower case, drop punctuation and articles, squeeze spaces."""
    text = unicodedata.normalize("NFKC", text).lower()
    text = "".join(ch for ch in text if ch not in string.punctuation)
    return " ".join(ARTICLES.sub(" ", text).split())


@register_metric("exact_match")
def exact_match(prediction: str, reference: str) -> float:
    """1.0 when the normalised answers are identical, else 0.0."""
    return float(normalize(prediction) == normalize(reference))


@register_metric("token_f1")
def token_f1(prediction: str, reference: str) -> float:
    """Harmonic mean of token precision and recall over normalised words (bag of words)."""
    pred, ref = normalize(prediction).split(), normalize(reference).split()
    if not pred or not ref:
        return float(pred == ref)  # both empty: a match; one empty: nothing in common
    common = sum((Counter(pred) & Counter(ref)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(pred), common / len(ref)
    return 2 * precision * recall / (precision + recall)


class _UnicodeTokenizer:
    """rouge-score's tokenizer interface, keeping letters of every script."""

    def tokenize(self, text: str) -> list[str]:
        return WORD.findall(unicodedata.normalize("NFKC", text).lower())


@lru_cache(maxsize=1)
def _rouge_scorer() -> Any:
    from rouge_score import rouge_scorer  # imported on first use: it pulls in nltk

    return rouge_scorer.RougeScorer(["rougeL"], tokenizer=_UnicodeTokenizer())


@register_metric("rouge_l")
def rouge_l(prediction: str, reference: str) -> float:
    """ROUGE-L F-measure: longest common subsequence of words, order-aware."""
    tokenizer = _UnicodeTokenizer()
    if not tokenizer.tokenize(prediction) or not tokenizer.tokenize(reference):
        return float(tokenizer.tokenize(prediction) == tokenizer.tokenize(reference))
    score = _rouge_scorer().score(reference, prediction)["rougeL"]
    return float(score.fmeasure)
