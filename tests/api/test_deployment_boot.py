"""A deployment of a real guest's replica, with OS morphing, boots with DHCP; the replica is untouched.

The marker-less Debian guest (a VMware-style export, NIC config pinned to ``ens192``) is replicated
local -> local by a transfer, then deployed twice (``tests/api/guest_runs.py``, chain ``deployments``):
first with OS morphing and the boot check, then, that instance torn down, without morphing. The second
boot is the sharpest check that the first deployment's morph never reached the replica: the unmorphed
guest still names ``ens192`` and never asks for an address on the virtio NIC, while a morph leaked into
the replica would give it one. ``test_morphing_migration.py`` inspects the same two boots for what they
show of OS morphing and of the boot check.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.api.guest_runs import TIMEOUT, GuestRuns
from tests.conftest import RunningStack

pytestmark = [pytest.mark.slow, pytest.mark.tcg]


def _events(deployment: dict[str, Any], task_type: str) -> list[str]:
    [task] = [t for t in deployment["tasks"] if t["task_type"] == task_type]
    return [e["message"] for e in task["events"]]


@pytest.mark.parametrize("stack", ["sqlite"], indirect=True)
def test_morphed_deployment_boots_with_dhcp_and_leaves_the_replica_as_it_was(
        stack: RunningStack, guest_runs: GuestRuns) -> None:
    done = guest_runs.deployments.result(TIMEOUT)
    assert done.execution["status"] == "COMPLETED", done.execution
    first, second = done.first, done.second
    assert first["last_execution_status"] == "COMPLETED", [t["exception_details"] for t in first["tasks"]]
    assert first["transfer_id"] == done.transfer["id"]
    morph = _events(first, "OS_MORPHING")
    for needle in ("purge open-vm-tools", "/etc/network/interfaces", "update-initramfs -u -k all"):
        assert any(needle in e for e in morph), (needle, morph)
    boot = _events(first, "FINALIZE_INSTANCE_DEPLOYMENT")
    assert any(e.startswith("Boot check: address at ") and "host-side: DHCPACK" in e for e in boot), boot
    assert any(e.startswith("Boot check: Booted: userspace at ") and "leased by DHCP" in e for e in boot), boot

    before, after_first, after_second = done.replica_digests
    assert before == after_first == after_second, "a deployment never writes into the replica"

    assert second["last_execution_status"] == "COMPLETED", [t["exception_details"] for t in second["tasks"]]
    assert not [t for t in second["tasks"] if t["task_type"] == "OS_MORPHING"]
    plain = _events(second, "FINALIZE_INSTANCE_DEPLOYMENT")
    assert any(e.startswith("Boot check: Booted without network: userspace at ")
               and "the guest never asked for an address on its NIC" in e for e in plain), plain
