"""Where benchmark results go: one dated JSON file per benchmark and day, written atomically."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any


def write_results(name: str, payload: dict[str, Any], folder: Path) -> Path:
    """Write ``<folder>/<name>-<today>.json`` (temp file, then rename) and return its path."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}-{dt.date.today().isoformat()}.json"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(payload, indent=2) + "\n")
    tmp.replace(path)
    return path
