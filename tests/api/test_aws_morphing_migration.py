"""The Debian test guest, as a VMware export, migrated to AWS (moto) with OS morphing, through the REST API.

The guest (``devstack/guest.py`` with cloud-init: VMware-made, ``ens192`` static, open-vm-tools) is
adapted for AWS, converted to raw and uploaded with the EBS direct APIs. The test then reads the
snapshot back itself and looks inside it: the AWS changes are there (NVMe and ENA in the initramfs,
cloud-init's Ec2 datasource) and the disk boots with its root disk on an NVMe controller, the way a
Nitro instance sees its EBS volume.

What moto can't show, and real AWS would: the instance actually booting from that AMI, ENA as its
NIC (QEMU has no ENA device; the boot here uses virtio-net), and the Ec2 metadata service answering
cloud-init. Slow: libguestfs regenerates the initramfs under TCG, and the boot check is a TCG boot.

On transfers the deployment's disk is a child of the replica snapshot, holding the morph's changes
(``providers.aws.delta``): it reads whole as on AWS (``ebs_inheritance``, in force from this test's
start, minutes before the deployment starts that child), and it and the instance are tagged with the
deployment's id, the action that made them.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from osmorphing.system import import_system
from providers.local.boot import boot_check
from tests.api.guest_runs import GuestRuns
from tests.conftest import RunningStack, task
from tests.leftovers import deployments_of
from tests.peers.moto import ebs_inheritance
from tests.providers.aws.awshelpers import snapshot_to_file

pytestmark = [pytest.mark.slow, pytest.mark.tcg, pytest.mark.usefixtures("ebs_inheritance")]
__all__ = ["ebs_inheritance"]
TAG = "sterna:migration-id"


def _events(migration: dict[str, Any], task_type: str) -> list[str]:
    return [e["message"] for e in task(migration, "debian-vm", task_type)["events"]]


def _look_inside(disk: Path) -> dict[str, str]:
    guestfs = import_system("guestfs", "python3-guestfs")
    os.environ.setdefault("LIBGUESTFS_BACKEND", "direct")
    g = guestfs.GuestFS(python_return_dict=True)
    # TCG, as the product's appliance (osmorphing.libguestfs_guest): run alone, nothing else in the session
    # (tests/osmorphing/conftest.py) says so, and KVM is not usable on every host.
    g.set_backend_settings(["force_tcg"])
    try:
        g.add_drive_opts(str(disk), format="raw", readonly=False)
        g.launch()
        g.mount("/dev/sda2", "/")
        cfg = "/etc/cloud/cloud.cfg.d/95-sterna.cfg"
        return {
            "cloud_cfg": g.cat(cfg) if g.is_file(cfg) else "",
            "modules": g.cat("/etc/initramfs-tools/modules"),
            "initramfs": g.sh("lsinitramfs /boot/initrd.img-* | grep -E '/(nvme|ena)\\.ko' || true"),
            "vmtools": "installed" if g.exists("/usr/bin/vmtoolsd") else "absent",
        }
    finally:
        g.shutdown()
        g.close()


@pytest.mark.parametrize("stack", ["sqlite"], indirect=True)
def test_debian_guest_to_aws_is_morphed_for_aws(stack: RunningStack, guest_runs: GuestRuns, tmp_path: Path) -> None:
    """The migration runs with the suite's other guest migrations (``tests/api/guest_runs.py``)."""
    final = guest_runs.wait("aws")
    m, ec2, ebs, subnet = final, guest_runs.aws.ec2, guest_runs.aws.ebs, guest_runs.aws.subnet
    assert final["last_execution_status"] == "COMPLETED", [t["exception_details"] for t in final["tasks"]]

    morph = _events(final, "OS_MORPHING")
    for needle in ("for 'aws'", "purge open-vm-tools", "initramfs modules for aws: nvme ena",
                   "cloud-init datasource Ec2, None", "update-initramfs -u -k all"):
        assert any(needle in e for e in morph), (needle, morph)
    upload = _events(final, "IMPORT_DISKS")
    [verified] = [e for e in upload if "read back and compared" in e]
    assert "identical" in verified, upload

    # Each action tags what it makes with its own id: the migration, or on transfers its deployment.
    made_by = [m["id"], *deployments_of(stack, final)]
    f = [{"Name": f"tag:{TAG}", "Values": made_by}]
    [instance] = [i for r in ec2.describe_instances(Filters=f)["Reservations"] for i in r["Instances"]]
    assert instance["State"]["Name"] == "running"
    assert instance["InstanceType"] == "t3.medium"
    assert instance["SubnetId"] == subnet["SubnetId"]
    [tag] = [t["Value"] for t in instance["Tags"] if t["Key"] == TAG]
    assert tag in made_by, tag
    [snap] = [s for s in ec2.describe_snapshots(OwnerIds=["self"], Filters=f)["Snapshots"]
              if {"Key": "sterna:role", "Value": "import-snapshot"} in s.get("Tags", [])]

    # The snapshot, read back by the test: the morphed, converted disk, with the AWS changes in it.
    disk = tmp_path / "from-ebs.raw"
    blocks = snapshot_to_file(ebs, snap["SnapshotId"], snap["VolumeSize"] * 1024**3, disk)
    assert blocks > 100
    inside = _look_inside(disk)
    assert "datasource_list: [ Ec2, None ]" in inside["cloud_cfg"], inside
    assert {"nvme", "ena"} <= set(inside["modules"].split()), inside
    assert "/nvme.ko" in inside["initramfs"] and "/ena.ko" in inside["initramfs"], inside
    assert inside["vmtools"] == "absent", inside

    # Booted from an NVMe controller, as on a Nitro instance: userspace starts and DHCP
    # configures eth0, seen from the host (lease and use of the address on the NIC).
    result = boot_check(str(disk), "raw", timeout=900, workdir=tmp_path / "boot", disk_bus="nvme")
    assert result.outcome == "booted", (result.reason, result.stages, result.network)
    assert result.userspace_started and result.address, (result.reason, result.stages, result.network)
