"""Every write to ``datasets``: the catalogue of built training sets per alias (replay pools)."""

from __future__ import annotations

import json
from datetime import datetime

from monitor.store import Store
from retrain.data.files import Dataset


def record_dataset(store: Store, alias: str, dataset: Dataset, created_at: datetime) -> None:
    """Catalogue a built dataset; building the same content again changes nothing."""
    store.execute(
        "INSERT OR IGNORE INTO datasets (id, model_alias, created_at, path, manifest)"
        " VALUES (?, ?, ?, ?, ?)",
        [dataset.id, alias, created_at, str(dataset.path), json.dumps(dataset.manifest)],
    )


def dataset_ids(store: Store, alias: str) -> list[str]:
    """The alias's datasets, oldest first (the replay buffer draws from them)."""
    rows = store.query("SELECT id FROM datasets WHERE model_alias = ? ORDER BY created_at", [alias])
    return [row[0] for row in rows]


def has_dataset(store: Store, alias: str) -> bool:
    return bool(store.query("SELECT 1 FROM datasets WHERE model_alias = ? LIMIT 1", [alias]))
