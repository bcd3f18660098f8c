"""Fixtures shared by the retrain tests."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def tiny_base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny test Llama (seed 0), built once per session."""
    from retrain.training.base_models import build_tiny_llama

    return build_tiny_llama(tmp_path_factory.mktemp("models") / "tiny")
