"""Exact and near-duplicate detection for training texts (normalised hashes, MinHash LSH).

Exact duplicates are found by the sha256 of a normalised text (case, accents folded by NFKC,
punctuation and whitespace runs collapsed). Near duplicates use ``datasketch``'s MinHash LSH
over character 5-grams of that normalised text: LSH only proposes candidates, and a candidate
counts as a duplicate when the *exact* Jaccard similarity of the two shingle sets reaches the
threshold, so the decision never depends on MinHash's estimation noise.

>>> index = NearDuplicateIndex(threshold=0.8)
>>> index.add("a", "How do I reset my password on the website?")
>>> index.find("how do I reset my password on the website, please?")
'a'
>>> index.find("How do I reset the password on the website?")  # Jaccard 0.72: kept
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from collections.abc import Hashable

from datasketch import MinHash, MinHashLSH

_NON_WORD = re.compile(r"[\W_]+", re.UNICODE)
LSH_MARGIN = 0.1


def normalise(text: str) -> str:
    """Fold case and Unicode forms and collapse punctuation/whitespace, for comparison only."""
    folded = unicodedata.normalize("NFKC", text).casefold()
    return _NON_WORD.sub(" ", folded).strip()


def text_key(text: str) -> str:
    """Return the sha256 hex digest of the normalised text: equal keys mean exact duplicates."""
    return hashlib.sha256(normalise(text).encode("utf-8")).hexdigest()


def shingles(text: str, size: int = 5) -> frozenset[str]:
    """Return the character ``size``-grams of the normalised text (the whole text if shorter)."""
    norm = normalise(text)
    if len(norm) <= size:
        return frozenset([norm]) if norm else frozenset()
    return frozenset(norm[i : i + size] for i in range(len(norm) - size + 1))


def jaccard(a: frozenset[str], b: frozenset[str]) -> float:
    """Return the Jaccard similarity of two sets (0.0 for two empty sets)."""
    if not a and not b:
        return 0.0
    return len(a & b) / len(a | b)


class NearDuplicateIndex:
    """A MinHash LSH index of texts that answers "is this a near duplicate of one already in?"."""

    def __init__(
        self,
        threshold: float,
        *,
        num_perm: int = 128,
        shingle_size: int = 5,
        seed: int = 1,
    ) -> None:
        if not 0.0 < threshold <= 1.0:
            raise ValueError(f"threshold must be in (0, 1], got {threshold!r}")
        if num_perm < 16:
            raise ValueError(f"num_perm must be >= 16, got {num_perm!r}")
        if shingle_size < 1:
            raise ValueError(f"shingle_size must be >= 1, got {shingle_size!r}")
        self.threshold = threshold
        self.shingle_size = shingle_size
        # LSH only proposes candidates (exact Jaccard decides), so it runs below the threshold:
        # that trades a few extra comparisons for fewer misses on the S-curve's shoulder, and
        # keeps at least two bands for thresholds near 1.
        lsh_threshold = min(max(threshold - LSH_MARGIN, 0.05), 0.9)
        self._lsh = MinHashLSH(threshold=lsh_threshold, num_perm=num_perm)
        # One set of permutations shared by every MinHash: generating them is the costly part.
        self._template = MinHash(num_perm=num_perm, seed=seed)
        self._sets: dict[Hashable, frozenset[str]] = {}

    def __len__(self) -> int:
        return len(self._sets)

    def _minhash(self, grams: frozenset[str]) -> MinHash:
        minhash = MinHash(
            num_perm=self._template.num_perm,
            seed=self._template.seed,
            permutations=self._template.permutations,
            scheme=self._template.scheme,
        )
        # Sorted so that the digest does not depend on set iteration order.
        minhash.update_batch([gram.encode("utf-8") for gram in sorted(grams)])
        return minhash

    def add(self, key: Hashable, text: str) -> None:
        """Index ``text`` under ``key`` (keys must be unique)."""
        if key in self._sets:
            raise ValueError(f"key {key!r} is already in the index")
        grams = shingles(text, self.shingle_size)
        self._sets[key] = grams
        # Empty texts are only ever exact duplicates; MinHash of an empty set matches nothing.
        if grams:
            self._lsh.insert(key, self._minhash(grams), check_duplication=False)

    def find(self, text: str) -> Hashable | None:
        """Return the key of the most similar indexed text at or above the threshold, or None."""
        grams = shingles(text, self.shingle_size)
        if not grams or not self._sets:
            return None
        best: tuple[float, str, Hashable] | None = None
        for candidate in self._lsh.query(self._minhash(grams)):
            score = jaccard(grams, self._sets[candidate])
            # Ties are broken by the key's text so that the answer is deterministic.
            if score >= self.threshold and (best is None or (score, str(candidate)) > best[:2]):
                best = (score, str(candidate), candidate)
        return None if best is None else best[2]
