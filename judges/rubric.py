"""Rubrics are TOML files with an anchored description for every point of the 1-5 scale.

The rubric version is the content hash of the file, so an edited rubric never reuses verdicts
cached under the old wording.

>>> rubric = load_rubric("helpfulness")
>>> sorted(rubric.anchors) == [1, 2, 3, 4, 5] and len(rubric.version)
12
"""

from __future__ import annotations

import hashlib
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path

from judges.verdict import SCALE_MAX, SCALE_MIN

RUBRIC_DIR = Path(__file__).resolve().parent / "rubrics"
NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")


class RubricError(ValueError):
    """A rubric file is missing or malformed; the message names the file and the field."""


@dataclass(frozen=True)
class Rubric:
    name: str
    task: str
    instructions: str
    anchors: dict[int, str]
    version: str  # first 12 hex digits of the file's sha256

    def system_prompt(self) -> str:
        """The judge's instructions: task, anchors, and the JSON verdict it must return."""
        scale = "\n".join(f"{point}: {self.anchors[point]}" for point in sorted(self.anchors))
        return (
            f"You are a strict evaluator of {self.task}.\n{self.instructions.strip()}\n\n"
            f"Score on a {SCALE_MIN}-{SCALE_MAX} scale:\n{scale}\n\n"
            'Reply with only a JSON object: {"score": <integer 1-5>, "reason": "<one sentence>"}'
        )


def rubric_names() -> list[str]:
    """Rubrics shipped in judges/rubrics/."""
    return sorted(path.stem for path in RUBRIC_DIR.glob("*.toml"))


def load_rubric(name_or_path: str | Path) -> Rubric:
    """A shipped rubric by name (``helpfulness``) or any rubric file by path."""
    text = str(name_or_path)
    if NAME.match(text):
        path = RUBRIC_DIR / f"{text}.toml"
        if not path.exists():
            raise RubricError(f"no rubric named {text!r}; shipped rubrics: {rubric_names()}")
    else:
        path = Path(text)
        if path.suffix != ".toml":
            raise RubricError(f"rubric {path} must be a .toml file")
        if not path.exists():
            raise RubricError(f"rubric file {path} does not exist")
    data = path.read_bytes()
    try:
        raw = tomllib.loads(data.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise RubricError(f"rubric {path} is not valid TOML: {exc}") from None
    return _validated(raw, path, hashlib.sha256(data).hexdigest()[:12])


def _validated(raw: dict[str, object], path: Path, version: str) -> Rubric:
    for key in ("name", "task", "anchors"):
        if key not in raw:
            raise RubricError(f"rubric {path} has no {key!r}")
    name, task = raw["name"], raw["task"]
    if not isinstance(name, str) or not NAME.match(name):
        raise RubricError(f"rubric {path}: name {name!r} must match {NAME.pattern}")
    if not isinstance(task, str) or not task.strip():
        raise RubricError(f"rubric {path}: task must be a non-empty string")
    instructions = raw.get("instructions", "")
    if not isinstance(instructions, str):
        raise RubricError(f"rubric {path}: instructions must be a string")
    anchors_raw = raw["anchors"]
    if not isinstance(anchors_raw, dict):
        raise RubricError(f"rubric {path}: anchors must be a table of 1..5 = description")
    expected = {str(point) for point in range(SCALE_MIN, SCALE_MAX + 1)}
    if set(anchors_raw) != expected:
        raise RubricError(
            f"rubric {path}: anchors must be exactly {sorted(expected)}, got {sorted(anchors_raw)}"
        )
    anchors = {}
    for point, description in anchors_raw.items():
        if not isinstance(description, str) or not description.strip():
            raise RubricError(f"rubric {path}: anchor {point} must be a non-empty description")
        anchors[int(point)] = description.strip()
    return Rubric(name, task.strip(), instructions, anchors, version)
