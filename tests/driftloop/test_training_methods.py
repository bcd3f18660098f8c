"""Which training method an alias gets (retrain.training_methods) and what a dpo run is given."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from driftloop.config import ConfigError
from driftloop.retrain_wiring import subprocess_trainer, training_method
from retrain.loop import TooFewExamples
from retrain.serving.deploy import Route
from tests.conftest import make_config
from tests.retrain.training_data import helpdesk_dataset


class Stop(Exception):
    """Raised by the recording executor: the spec is what the test wanted."""


def recording_executor(specs: list[Any]) -> Any:
    def execute(spec: Any, **_: Any) -> Any:
        specs.append(spec)
        raise Stop

    return execute


def test_methods_by_alias_with_a_default(tmp_path: Path) -> None:
    cfg = make_config(tmp_path, retrain={"training_methods": {"Support": "dpo", "*": "sft"}})
    assert training_method(cfg, "Support") == "dpo"
    assert training_method(cfg, "other") == "sft"
    with pytest.raises(ConfigError, match=r"retrain\.training_methods"):
        make_config(tmp_path, retrain={"training_methods": {"*": "ppo"}})


def test_a_dpo_alias_without_pairs_is_suppressed_by_name(tmp_path: Path) -> None:
    cfg = make_config(tmp_path, retrain={"training_methods": {"support": "dpo"}})
    dataset = helpdesk_dataset(tmp_path / "datasets" / "support", n=8)
    base = tmp_path / "base"
    base.mkdir()
    (base / "config.json").write_text("{}")
    train = subprocess_trainer(cfg, base, tmp_path / "adapters", recording_executor([]))
    with pytest.raises(TooFewExamples, match=r"dpo for support.*no preference pairs"):
        train(dataset, on_progress=print)


@pytest.mark.parametrize("production_adapter", [None, "adapters/abc"])
def test_a_dpo_run_takes_production_as_its_reference(
    tmp_path: Path, production_adapter: str | None
) -> None:
    cfg = make_config(tmp_path, retrain={"training_methods": {"*": "dpo"}, "dpo_beta": 0.3})
    dataset = helpdesk_dataset(tmp_path / "datasets" / "support", n=8, pairs=True)
    base = tmp_path / "base"
    base.mkdir()
    (base / "config.json").write_text("{}")
    adapter = None
    if production_adapter is not None:
        adapter = type("A", (), {"path": str(tmp_path / production_adapter)})()
    specs: list[Any] = []
    train = subprocess_trainer(
        cfg,
        base,
        tmp_path / "adapters",
        recording_executor(specs),
        lambda alias: Route("support@v1" if adapter else "base", adapter),  # type: ignore[arg-type]
    )
    with pytest.raises(Stop):
        train(dataset, on_progress=print)
    [spec] = specs
    assert (spec.method, spec.dpo_beta) == ("dpo", 0.3)
    expected = None if adapter is None else tmp_path / production_adapter
    assert spec.reference_adapter == expected
