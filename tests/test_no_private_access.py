"""No test reaches into another module's private state: ``obj._name`` or ``from m import _name``.

A test that needs to stall, break or observe a component does it through a public method or a
fault hook (``monitor/faults.py``, ``monitor/failpoints.py``), so that a refactoring of the
internals does not break tests that exercise behaviour. Names the test module defines itself
(its helpers, its classes' attributes) are its own to use.
"""

from __future__ import annotations

import ast
from pathlib import Path

TESTS = Path(__file__).resolve().parent

# (file relative to tests/, attribute) pairs allowed for now, each with its reason. Empty: every
# case found so far was fixed with a public method.
ALLOWED: dict[tuple[str, str], str] = {}

# Private by naming convention only: these are documented public API of their owners.
PUBLIC_UNDERSCORE = {
    "_asdict",  # namedtuple
    "_replace",  # namedtuple
    "_fields",  # namedtuple
    "_make",  # namedtuple
}

ACCESSORS = {"getattr", "setattr", "hasattr", "delattr"}


def _private(name: str) -> bool:
    return (
        name.startswith("_")
        and not (name.startswith("__") and name.endswith("__"))
        and name not in PUBLIC_UNDERSCORE
    )


def _defined_here(tree: ast.Module) -> set[str]:
    """Names the module defines: functions, classes, variables, arguments, self/cls attributes."""
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names.add(node.name)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            names.add(node.id)
        elif isinstance(node, ast.arg):
            names.add(node.arg)
        elif (
            isinstance(node, ast.Attribute)
            and isinstance(node.ctx, ast.Store)
            and isinstance(node.value, ast.Name)
            and node.value.id in ("self", "cls")
        ):
            names.add(node.attr)
    return names


def private_accesses(source: str) -> list[tuple[int, str, str]]:
    """``(line, attribute, code)`` for every reach into private state of another module.

    >>> private_accesses("store._lock.acquire()\\nself._x = 1\\nfrom m import _helper")
    [(1, '_lock', 'store._lock'), (3, '_helper', 'from m import _helper')]
    """
    tree = ast.parse(source)
    own = _defined_here(tree)
    found: list[tuple[int, str, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and _private(node.attr):
            receiver = node.value
            if isinstance(receiver, ast.Name) and receiver.id in ("self", "cls"):
                continue
            if node.attr not in own:
                found.append((node.lineno, node.attr, ast.unparse(node)))
        elif isinstance(node, ast.ImportFrom) and not (node.module or "").startswith("tests"):
            for alias in node.names:
                if _private(alias.name):
                    found.append(
                        (node.lineno, alias.name, f"from {node.module} import {alias.name}")
                    )
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name | ast.Attribute)
            and (node.func.id if isinstance(node.func, ast.Name) else node.func.attr) in ACCESSORS
            and len(node.args) >= 2
            and isinstance(node.args[1], ast.Constant)
            and isinstance(node.args[1].value, str)
            and _private(node.args[1].value)
            and node.args[1].value not in own
        ):
            found.append((node.lineno, node.args[1].value, ast.unparse(node)))
    return sorted(found)


def test_no_test_touches_private_state_of_another_module():
    offences = []
    for path in sorted(TESTS.rglob("*.py")):
        relative = path.relative_to(TESTS).as_posix()
        for line, name, code in private_accesses(path.read_text(encoding="utf-8")):
            if (relative, name) not in ALLOWED:
                offences.append(f"tests/{relative}:{line}: {code}")
    assert not offences, "private state reached from tests:\n" + "\n".join(offences)


def test_the_checker_sees_attribute_import_and_string_forms():
    source = (
        "import ctypes\n"
        "writer._thread.join()\n"
        "setattr(deployer, '_begin', None)\n"
        "from monitor.store import _helper\n"
        "row._asdict()\n"
        "class Fake:\n"
        "    def __init__(self):\n"
        "        self._calls = []\n"
        "fake = Fake()\n"
        "fake._calls.append(1)\n"
    )
    assert [name for _, name, _ in private_accesses(source)] == ["_thread", "_begin", "_helper"]


def test_every_allowlisted_access_still_exists():
    """An allowlist entry whose access was fixed must go, so the list only shrinks."""
    stale = []
    for relative, name in ALLOWED:
        path = TESTS / relative
        names = [n for _, n, _ in private_accesses(path.read_text())] if path.exists() else []
        if name not in names:
            stale.append((relative, name))
    assert not stale
