"""The real proof through the service: a VMware-style Debian guest migrates local -> local with OS
morphing and boots on KVM devices with DHCP; the same disk without morphing boots but gets no network.

The guest (tests/guests/debian.py: debootstrap, GPT, GRUB, open-vm-tools, ifupdown pinned to ``ens192``
and a VMware MAC) is exported as the streamOptimized VMDK vSphere produces. Both migrations run at
once; each boot check is a QEMU TCG boot with a virtio disk and a virtio NIC on user-mode networking.
Slow: the guest build (~4 min the first time, then cached), libguestfs under TCG, two TCG boots.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.api.guest_runs import GuestRuns
from tests.conftest import RunningStack, task
from tests.guests.debian import OLD_NIC

pytestmark = [pytest.mark.slow, pytest.mark.tcg]


def _events(migration: dict[str, Any], task_type: str) -> list[str]:
    return [e["message"] for e in task(migration, "debian-vm", task_type)["events"]]


@pytest.mark.parametrize("stack", ["sqlite"], indirect=True)
def test_morphed_guest_boots_with_dhcp_and_unmorphed_does_not(stack: RunningStack, guest_runs: GuestRuns) -> None:
    """Both migrations run with the suite's other guest migrations (``tests/api/guest_runs.py``)."""
    done = guest_runs.wait("kvm_morphed")
    skipped = guest_runs.wait("kvm_plain")

    assert done["last_execution_status"] == "COMPLETED", [t["exception_details"] for t in done["tasks"]]
    morph_events = _events(done, "OS_MORPHING")
    # Every change is auditable in the task's events: the file and what changed.
    for needle in ("purge open-vm-tools", "/etc/network/interfaces", f"10-{OLD_NIC}.link", "/etc/default/grub",
                   "/etc/initramfs-tools/modules", "update-initramfs -u -k all", "update-grub"):
        assert any(needle in e for e in morph_events), (needle, morph_events)
    boot = _events(done, "DEPLOY_INSTANCE_RESOURCES")
    assert any(e.startswith("Boot check: userspace started") for e in boot), boot
    assert any("IPv4 address 10.0.2.15 obtained by DHCP" in e for e in boot), boot
    assert task(done, "debian-vm", "DEPLOY_INSTANCE_RESOURCES")["status"] == "COMPLETED"

    assert skipped["last_execution_status"] == "COMPLETED", [t["exception_details"] for t in skipped["tasks"]]
    assert _events(skipped, "OS_MORPHING") == ["OS morphing skipped: skip_os_morphing is set"]
    plain_boot = _events(skipped, "DEPLOY_INSTANCE_RESOURCES")
    assert any(e.startswith("Boot check: userspace started") for e in plain_boot), plain_boot
    assert any("no IPv4 address on the console" in e for e in plain_boot), plain_boot
    assert any("STERNA-GUEST-NO-IPV4" in e for e in plain_boot), plain_boot
