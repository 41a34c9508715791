"""The ``sterna`` CLI against the real stack: endpoints, a watched migration, cancel and delete."""

from __future__ import annotations

import json
import os
import pty
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import RunningStack
from tests.guests.trees import build_os_disk
from tests.helpers import identical, inventories

pytestmark = pytest.mark.slow


def _sterna(stack: RunningStack, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "client.cli", "--url", stack.url, "--project", "cli", *args],
                          capture_output=True, text=True, timeout=300, check=False)


def _on_a_terminal(stack: RunningStack, *args: str) -> tuple[int, str]:
    """Run the CLI with a pseudo-terminal as its stdout and stderr; returns its exit code and what it drew
    (ANSI sequences removed, so the text of every redraw is there)."""
    main, child = pty.openpty()
    env = {**os.environ, "COLUMNS": "220", "LINES": "50", "TERM": "xterm"}
    proc = subprocess.Popen([sys.executable, "-m", "client.cli", "--url", stack.url, "--project", "cli", *args],
                            stdin=subprocess.DEVNULL, stdout=child, stderr=child, env=env)
    os.close(child)
    chunks = []
    while True:
        try:
            data = os.read(main, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    os.close(main)
    code = proc.wait(timeout=300)
    return code, re.sub(r"\x1b\[[0-9;?]*[A-Za-z]|\r", "", b"".join(chunks).decode(errors="replace"))


def _os_vm(inventory: Path, name: str) -> str:
    """A VM whose disk holds a small synthetic Debian (no kernel): OS morphing really runs on it, for one
    appliance launch, and nothing is booted. Returns its disk's partition-table UUID."""
    vm_dir = inventory / name
    vm_dir.mkdir(parents=True)
    ptuuid = build_os_disk(vm_dir / "disk-0.raw")
    vm = {"name": name, "num_cpu": 1, "memory_mb": 512, "firmware": "BIOS", "os_type": "linux",
          "guest_id": "debian12_64Guest", "nics": [{"network_name": "VM Network", "mac_address": "00:50:56:aa:bb:01"}],
          "disks": [{"id": "disk-0", "file": "disk-0.raw", "format": "raw"}]}
    (vm_dir / "vm.json").write_text(json.dumps(vm))
    return ptuuid


def test_cli_creates_watches_and_deletes(stack: RunningStack) -> None:
    src, dst = inventories(stack, [])
    ptuuid = _os_vm(src, "vm-a")
    a = json.loads(_sterna(stack, "endpoint", "create", "--name", "a", "--provider", "local", "--connection",
                           json.dumps({"path": str(src)})).stdout)
    b = json.loads(_sterna(stack, "endpoint", "create", "--name", "b", "--provider", "local", "--connection",
                           json.dumps({"path": str(dst)})).stdout)
    assert _sterna(stack, "endpoint", "validate", a["id"]).returncode == 0
    assert "vm-a" in _sterna(stack, "endpoint", "instances", a["id"]).stdout
    created = _sterna(stack, "migration", "create", "--origin-endpoint", a["id"], "--destination-endpoint",
                      b["id"], "--instance", "vm-a", "--destination-environment", '{"flavor_name": "m1.tiny"}')
    migration_id = json.loads(created.stdout)["id"]
    # --watch as a user sees it: on a terminal (a pseudo-terminal here), redrawn in place.
    code, screen = _on_a_terminal(stack, "migration", "show", migration_id, "--watch")
    assert code == 0, screen
    assert f"Migration {migration_id}: COMPLETED" in screen
    # the sub-step under the bar while OS morphing ran: the inspection, for as long as the appliance starts
    # (the morph's later sub-steps follow within a poll or two, so which of them a poll sees is chance)
    assert "└ vm-a OS_MORPHING: OS morphing: inspecting " in screen, screen
    # the final task table: every task with its last event
    assert "last event" in screen
    table = screen[screen.rindex("last event"):]
    for task_type in ("REPLICATE_DISKS", "OS_MORPHING", "DEPLOY_INSTANCE_RESOURCES", "CLEANUP_MIGRATION_RESOURCES"):
        assert re.search(rf"vm-a\s*│\s*{task_type}\s*│\s*COMPLETED\s*│\s*\S", table), (task_type, table)
    assert re.search(r"vm-a\s*│\s*OS_MORPHING\s*│\s*COMPLETED\s*│\s*OS morphing done: \d+ change", table), table
    # what the morph did, from the task's events: the guest's grub-pc now names its disk by the disk's own
    # partition-table UUID, read through libguestfs; the kvm agent could not come from anywhere offline
    shown = json.loads(_sterna(stack, "migration", "show", migration_id).stdout)
    events = [e["message"] for t in shown["tasks"] if t["task_type"] == "OS_MORPHING" for e in t["events"]]
    link = f"/dev/disk/by-id/sterna-ptuuid-{ptuuid}"
    assert f"modified /var/cache/debconf/config.dat: debconf grub-pc/install_devices: /dev/sda -> {link}" in \
        "\n".join(events), events
    # once, at WARNING level (the morph's live event; not repeated when the step ends)
    agent = [e for t in shown["tasks"] if t["task_type"] == "OS_MORPHING" for e in t["events"]
             if "qemu-guest-agent not installed for kvm: no qemu-guest-agent package" in e["message"]]
    assert [e["level"] for e in agent] == ["WARNING"], agent
    assert not identical(src / "vm-a" / "disk-0.raw", dst / "vm-a" / "disk-0.qcow2")  # morphed, not copied
    listed = _sterna(stack, "migration", "list")
    assert migration_id[:8] in listed.stdout
    assert _sterna(stack, "migration", "delete", migration_id).returncode == 0
    gone = _sterna(stack, "migration", "show", migration_id)
    assert gone.returncode == 1 and "404" in gone.stderr


def test_cli_reports_api_errors(stack: RunningStack) -> None:
    out = _sterna(stack, "migration", "cancel", "00000000-0000-0000-0000-000000000000")
    assert out.returncode == 1 and "404" in out.stderr and "could not be found" in out.stderr
