"""Workflows schedule activities by the names in ``activities.names``; the workers register exactly those."""

from __future__ import annotations

import ast
from pathlib import Path

from temporalio import activity

from activities import names
from activities.endpoint import EndpointActivities
from activities.liveness import host_alive
from activities.outcomes import RecordActivities
from activities.steps import MigrationActivities
from activities.transfers import TransferActivities
from activities.trusts import TrustActivities

ROOT = Path(__file__).resolve().parents[2]
CLASSES = (MigrationActivities, RecordActivities, TrustActivities, EndpointActivities, TransferActivities)
#: activities that need no services: plain functions
FUNCTIONS = (host_alive,)
DECLARED = {v for k, v in vars(names).items() if k.isupper()}


def definitions(cls: type) -> dict[str, str]:
    """Method name -> activity name, for the activities a class defines."""
    found: dict[str, str] = {}
    for method, attr in vars(cls).items():
        defn = activity._Definition.from_callable(attr) if callable(attr) else None
        if defn is not None and defn.name:
            found[method] = defn.name
    return found


def test_every_name_is_an_activity() -> None:
    assert len(DECLARED) == 21
    registered = [name for cls in CLASSES for name in definitions(cls).values()]
    registered += [str(activity._Definition.must_from_callable(f).name) for f in FUNCTIONS]
    assert sorted(registered) == sorted(DECLARED)  # each once: no two activities share a name


def test_the_worker_registers_every_activity() -> None:
    """worker.main hands each activity method (``transfers.replicate_disk``...) to a Worker."""
    used = {n.attr for n in ast.walk(ast.parse((ROOT / "worker" / "main.py").read_text()))
            if isinstance(n, ast.Attribute)}
    for cls in CLASSES:
        missing = set(definitions(cls)) - used
        assert not missing, f"{cls.__name__}: {missing}"
    named = {n.id for n in ast.walk(ast.parse((ROOT / "worker" / "main.py").read_text())) if isinstance(n, ast.Name)}
    assert {f.__name__ for f in FUNCTIONS} <= named


def test_workflows_spell_no_activity_name() -> None:
    """Not in ``execute_activity`` nor in the helpers that wrap it (``shielded``, ``_per_disk``...)."""
    found = [f"{path.name}:{node.lineno} {node.value!r}"
             for path in (ROOT / "workflows").glob("*.py")
             for node in ast.walk(ast.parse(path.read_text()))
             if isinstance(node, ast.Constant) and node.value in DECLARED]
    assert not found


def test_activities_are_defined_by_name_constants() -> None:
    for path in (ROOT / "activities").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "defn":
                for kw in node.keywords:
                    assert kw.arg != "name" or not isinstance(kw.value, ast.Constant), f"{path.name}:{node.lineno}"


def test_workflows_schedule_activities_by_name_constants() -> None:
    for path in (ROOT / "workflows").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "execute_activity":
                assert not isinstance(node.args[0], ast.Constant), f"{path.name}:{node.lineno}"
