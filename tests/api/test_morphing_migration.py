"""The real proof through the service: a VMware-style Debian guest migrates local -> local with OS
morphing and is proven booted with DHCP from host-side signals; the same disk without morphing boots
without network, and says why; a VMware-made variant booting its root as /dev/sda2 fails in the
initramfs, and the check ends on that line, once.

The guest (tests/guests/debian.py: debootstrap, GPT, GRUB, open-vm-tools, ifupdown pinned to ``ens192``
and a VMware MAC) is exported as the streamOptimized VMDK vSphere produces, with its marker service
removed (``foreign_variants``): nothing on its console is ours, and it stays up after boot. The three
migrations run at once; each boot check is a QEMU TCG boot with a virtio disk and a virtio NIC on
user-mode networking that the check captures.
Slow: the guest build (~4 min the first time, then cached), one appliance for the variants, libguestfs
under TCG, three TCG boots (one ends in the initramfs).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.conftest import RunningStack, task, wait_final
from tests.guests.debian import OLD_NIC, build_debian_guest, foreign_variants
from worker.sample import create_vmware_vm

pytestmark = [pytest.mark.slow, pytest.mark.tcg]


def _events(migration: dict[str, Any], task_type: str) -> list[str]:
    return [e["message"] for e in task(migration, "debian-vm", task_type)["events"]]


@pytest.mark.parametrize("stack", ["sqlite"], indirect=True)
def test_morphed_guest_boots_with_dhcp_and_unmorphed_does_not(stack: RunningStack, tmp_path: Path) -> None:
    variants = foreign_variants(build_debian_guest(), tmp_path / "variants")
    src = stack.inventory("vmware-export")
    create_vmware_vm(src, "debian-vm", variants["no-marker"])
    src_dev = stack.inventory("vmware-by-device")
    create_vmware_vm(src_dev, "debian-vm", variants["root-by-device"])
    for copy in variants.values():
        copy.unlink()
    dst_morphed, dst_plain, dst_dev = stack.inventory("kvm-morphed"), stack.inventory("kvm-plain"), \
        stack.inventory("kvm-dev")
    with stack.client() as api:
        a = api.create_endpoint("vmware-export", "local", {"path": str(src)})
        a2 = api.create_endpoint("vmware-by-device", "local", {"path": str(src_dev)})
        b = api.create_endpoint("kvm-1", "local", {"path": str(dst_morphed)})
        c = api.create_endpoint("kvm-2", "local", {"path": str(dst_plain)})
        d = api.create_endpoint("kvm-3", "local", {"path": str(dst_dev)})
        morphed = api.create_migration(origin_endpoint_id=a["id"], destination_endpoint_id=b["id"],
                                       instances=["debian-vm"], skip_os_morphing=False,
                                       network_map={"VM Network": "default"})
        plain = api.create_migration(origin_endpoint_id=a["id"], destination_endpoint_id=c["id"],
                                     instances=["debian-vm"], skip_os_morphing=True,
                                     destination_environment={"verify_boot": True})
        by_device = api.create_migration(origin_endpoint_id=a2["id"], destination_endpoint_id=d["id"],
                                         instances=["debian-vm"], skip_os_morphing=True,
                                         destination_environment={"verify_boot": True})
        done = wait_final(api, morphed["id"], timeout=1800)
        skipped = wait_final(api, plain["id"], timeout=1800)
        failed = wait_final(api, by_device["id"], timeout=1800)

    assert done["last_execution_status"] == "COMPLETED", [t["exception_details"] for t in done["tasks"]]
    morph_events = _events(done, "OS_MORPHING")
    # Every change is auditable in the task's events: the file and what changed.
    for needle in ("purge open-vm-tools", "/etc/network/interfaces", f"10-{OLD_NIC}.link", "/etc/default/grub",
                   "/etc/initramfs-tools/modules", "update-initramfs -u -k all", "update-grub"):
        assert any(needle in e for e in morph_events), (needle, morph_events)
    boot = _events(done, "DEPLOY_INSTANCE_RESOURCES")
    # Ended because the evidence was complete (not at poweroff: this guest stays up; not at a timeout).
    assert "Boot check: ended: evidence complete: userspace on the console, address leased and answering the " \
           "host's probe" in boot, boot
    assert any(e.startswith("Boot check: userspace at ") and "console:" in e for e in boot), boot
    assert any(e.startswith("Boot check: address at ") and "host-side: DHCPACK" in e and "10.0.2.15" in e
               for e in boot), boot
    assert any(e.startswith("Boot check: address-in-use at ") and "host-side:" in e for e in boot), boot
    assert any(e.startswith("Boot check: Booted: userspace at ") and "IPv4 10.0.2.15 leased by DHCP" in e
               for e in boot), boot
    assert not any("STERNA-GUEST" in e for e in boot), boot
    assert task(done, "debian-vm", "DEPLOY_INSTANCE_RESOURCES")["status"] == "COMPLETED"

    assert skipped["last_execution_status"] == "COMPLETED", [t["exception_details"] for t in skipped["tasks"]]
    assert _events(skipped, "OS_MORPHING") == ["OS morphing skipped: skip_os_morphing is set"]
    plain_boot = _events(skipped, "DEPLOY_INSTANCE_RESOURCES")
    assert any(e.startswith("Boot check: userspace at ") for e in plain_boot), plain_boot
    # Its NIC config still names ens192: the guest never asks for an address on the virtio NIC.
    assert any(e.startswith("Boot check: Booted without network: userspace at ")
               and "the guest never asked for an address on its NIC" in e for e in plain_boot), plain_boot

    assert failed["last_execution_status"] == "ERROR"
    deploy = task(failed, "debian-vm", "DEPLOY_INSTANCE_RESOURCES")
    assert deploy["status"] == "ERROR"
    alert = "ALERT!  /dev/sda2 does not exist.  Dropping to a shell!"
    assert alert in deploy["exception_details"], deploy["exception_details"]
    assert "the check ended on the console line" in deploy["exception_details"]
    dev_events = _events(failed, "DEPLOY_INSTANCE_RESOURCES")
    # exactly one attempt, failed on that line, not retried
    assert [e for e in dev_events if e.startswith("Attempt ")] == [
        next(e for e in dev_events if e.startswith("Attempt 1 failed: "))], dev_events
    assert any(alert in e for e in dev_events if e.startswith("Attempt 1 failed: ")), dev_events
