"""Modules that workflows import inside the sandbox stay stdlib-only.

The sandbox re-imports what is not passed through on every workflow run, and anything that
pulls in providers, the record store or cloud SDKs there is slow at best, non-deterministic at worst.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PURE = ["core/errors.py", "core/statuses.py", "activities/names.py", "workflows/ids.py"]


def imported_modules(path: Path) -> set[str]:
    modules: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            modules.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            modules.add(node.module)
    return modules


@pytest.mark.parametrize("module", PURE)
def test_stdlib_only(module: str) -> None:
    tops = {name.split(".")[0] for name in imported_modules(ROOT / module)}
    assert tops <= set(sys.stdlib_module_names) | {"__future__"}, module
