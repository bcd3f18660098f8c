"""Every judge implementation and reference metric is registered and documented (README)."""

import importlib
import inspect
import pkgutil
from pathlib import Path

import judges
from judges.plugins import JUDGES, Judge, judge_kinds
from judges.reference import REFERENCE_METRICS

README = (Path(__file__).resolve().parents[2] / "README.md").read_text()


def _implementations() -> list[type[Judge]]:
    for module in pkgutil.iter_modules(judges.__path__):
        importlib.import_module(f"judges.{module.name}")
    found, todo = [], list(Judge.__subclasses__())
    while todo:
        cls = todo.pop()
        todo.extend(cls.__subclasses__())
        if not inspect.isabstract(cls) and cls.__module__.startswith("judges."):
            found.append(cls)
    return found


def test_every_judge_implementation_is_registered_under_its_kind():
    implementations = _implementations()
    assert len(implementations) >= 6
    for cls in implementations:
        assert cls.kind, f"{cls.__name__} is not registered"
        assert JUDGES[cls.kind] is cls
    assert set(judge_kinds().values()) == set(implementations)


def test_every_judge_kind_and_reference_metric_is_documented():
    for cls in _implementations():
        assert (cls.__doc__ or "").strip(), f"{cls.__name__} has no docstring"
        assert f"`{cls.kind}`" in README, f"judge kind {cls.kind} is not in the README"
    for name, fn in REFERENCE_METRICS.items():
        assert (fn.__doc__ or "").strip()
        assert f"`{name}`" in README, f"reference metric {name} is not in the README"
