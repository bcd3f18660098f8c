"""Labelled example sets (calibration, anchors): JSONL files of prompt, response and a 1-5 label.

One object per line: ``{"id": "trivia-003-match", "prompt": "...", "response": "...",
"label": 5, "how": "the corpus answer to this question"}`` (``label`` may be absent in an
anchor set). The set's version is the content hash of the file.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path

from judges.verdict import SCALE_MAX, SCALE_MIN

DATA_DIR = Path(__file__).resolve().parent / "data"
CALIBRATION_SET = DATA_DIR / "calibration.jsonl"
ANCHOR_SET = DATA_DIR / "anchors.jsonl"
ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$")


class ExampleSetError(ValueError):
    """A labelled set is missing or malformed; the message names the file, line and field."""


@dataclass(frozen=True, slots=True)
class Example:
    id: str
    prompt: str
    response: str
    label: int | None = None
    how: str = ""  # how the label was made

    def to_json(self) -> str:
        return json.dumps(
            {
                "id": self.id,
                "prompt": self.prompt,
                "response": self.response,
                "label": self.label,
                "how": self.how,
            },
            ensure_ascii=False,
        )


def load_examples(path: Path, *, labelled: bool = True) -> list[Example]:
    """Read and validate a JSONL example set; ``labelled`` requires a label on every line."""
    if not path.exists():
        raise ExampleSetError(f"example set {path} does not exist")
    out, seen = [], set()
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{path}:{number}"
        try:
            raw = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ExampleSetError(f"{where}: not JSON ({exc.msg})") from None
        if not isinstance(raw, dict):
            raise ExampleSetError(f"{where}: expected an object")
        example_id = raw.get("id")
        if not isinstance(example_id, str) or not ID.match(example_id):
            raise ExampleSetError(f"{where}: id {example_id!r} must match {ID.pattern}")
        if example_id in seen:
            raise ExampleSetError(f"{where}: duplicate id {example_id!r}")
        seen.add(example_id)
        for key in ("prompt", "response"):
            if not isinstance(raw.get(key), str):
                raise ExampleSetError(f"{where}: {key} must be a string")
        label = raw.get("label")
        if label is None and labelled:
            raise ExampleSetError(f"{where}: label is missing")
        if label is not None and (
            isinstance(label, bool)
            or not isinstance(label, int)
            or not SCALE_MIN <= label <= SCALE_MAX
        ):
            raise ExampleSetError(f"{where}: label {label!r} must be an integer 1-5")
        out.append(Example(example_id, raw["prompt"], raw["response"], label, raw.get("how", "")))
    if not out:
        raise ExampleSetError(f"example set {path} is empty")
    return out


def set_version(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:12]
