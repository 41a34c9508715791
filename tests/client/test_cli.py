"""The ``sterna`` CLI against the real stack: endpoints, a watched migration, cancel and delete."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.conftest import RunningStack
from tests.helpers import identical, inventories

pytestmark = pytest.mark.slow


def _sterna(stack: RunningStack, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "client.cli", "--url", stack.url, "--project", "cli", *args],
                          capture_output=True, text=True, timeout=300, check=False)


def test_cli_creates_watches_and_deletes(stack: RunningStack) -> None:
    src, dst = inventories(stack, ["vm-a"], 8)
    a = json.loads(_sterna(stack, "endpoint", "create", "--name", "a", "--provider", "local", "--connection",
                           json.dumps({"path": str(src)})).stdout)
    b = json.loads(_sterna(stack, "endpoint", "create", "--name", "b", "--provider", "local", "--connection",
                           json.dumps({"path": str(dst)})).stdout)
    assert _sterna(stack, "endpoint", "validate", a["id"]).returncode == 0
    assert "vm-a" in _sterna(stack, "endpoint", "instances", a["id"]).stdout
    run = _sterna(stack, "migration", "create", "--origin-endpoint", a["id"], "--destination-endpoint", b["id"],
                  "--instance", "vm-a", "--destination-environment", '{"flavor_name": "m1.tiny"}', "--watch")
    assert run.returncode == 0, run.stdout + run.stderr
    assert ": COMPLETED" in run.stdout
    migration_id = run.stdout.split("Migration ")[1].split(":")[0]
    assert identical(src / "vm-a" / "disk-0.raw", dst / "vm-a" / "disk-0.qcow2")
    listed = _sterna(stack, "migration", "list")
    assert migration_id[:8] in listed.stdout
    assert _sterna(stack, "migration", "delete", migration_id).returncode == 0
    gone = _sterna(stack, "migration", "show", migration_id)
    assert gone.returncode == 1 and "404" in gone.stderr


def test_cli_reports_api_errors(stack: RunningStack) -> None:
    out = _sterna(stack, "migration", "cancel", "00000000-0000-0000-0000-000000000000")
    assert out.returncode == 1 and "404" in out.stderr and "could not be found" in out.stderr
