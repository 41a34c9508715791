"""Workflows schedule activities by the names in ``activities.names``; the workers register exactly those."""

from __future__ import annotations

import ast
from pathlib import Path

from temporalio import activity

from activities import names
from activities.endpoint import EndpointActivities
from activities.record import RecordActivities
from activities.steps import MigrationActivities
from activities.trusts import TrustActivities

WORKFLOWS = Path(__file__).resolve().parents[2] / "workflows"


def registered() -> set[str]:
    found: set[str] = set()
    for cls in (MigrationActivities, RecordActivities, TrustActivities, EndpointActivities):
        for attr in vars(cls).values():
            defn = activity._Definition.from_callable(attr) if callable(attr) else None
            if defn is not None and defn.name:
                found.add(defn.name)
    return found


def test_every_name_is_an_activity() -> None:
    declared = {v for k, v in vars(names).items() if k.isupper()}
    assert len(declared) == 13
    assert registered() == declared


def test_workflows_use_no_literal_names() -> None:
    for path in WORKFLOWS.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "execute_activity":
                assert not isinstance(node.args[0], ast.Constant), f"{path.name}:{node.lineno}"
