"""Windows guests migrated through the REST API with OS morphing, for kvm, openstack and aws.

Each target's test first runs without what the target needs on the worker host: the migration fails at
validation, before any disk is copied, and the error names the path looked for. Then the operator drops
the sources where Sterna looks by default (``<data dir>/windows``) and the migration completes. The
disk the destination received is read back with libguestfs and hivex and checked with
``windows_checks`` (drivers of that version, boot-start service, CriticalDeviceDatabase where used,
startup script, cloudbase-init for the target):

* kvm (local -> local): Server 2019; the destination inventory's disk;
* openstack (local -> the real Glance, Keystone mode): every synthetic version, one VM each, in one
  migration; the Glance images, downloaded with the user's own session;
* aws (local -> moto): every version in one migration; the EBS snapshots, read with the EBS direct APIs.

The instances of one migration are morphed concurrently (one appliance each, up to the worker's
``max_disk_activities``). No boot: that needs a real Windows image (README, Windows).
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import RunningStack, task, wait_final
from tests.guests.windows import Readback, read_back, sys_bytes
from tests.osmorphing import windows_checks as checks
from tests.osmorphing.conftest import VERSIONS
from tests.peers.moto import conn_info, ebs, ec2, moto_url, subnet
from tests.peers.openstack.fixtures import KeystoneStack
from tests.providers.aws.awshelpers import snapshot_to_file

pytestmark = [pytest.mark.slow]
__all__ = ["conn_info", "ebs", "ec2", "moto_url", "subnet"]
#: a migration of seven Windows guests: seven appliances under TCG, four at a time, on a shared machine
TIMEOUT = 1800
#: VMware's guest id for each synthetic version (what a VMware export records)
GUEST_IDS = {"windows2008r2": "windows7Server64Guest", "windows2012r2": "windows8Server64Guest",
             "windows2016": "windows9Server64Guest", "windows2019": "windows2019srv_64Guest",
             "windows2022": "windows2019srvNext_64Guest", "windows10": "windows9_64Guest",
             "windows11": "windows11_64Guest"}
MORPHED: dict[str, Any] = dict(skip_os_morphing=False, user_scripts=checks.USER_SCRIPTS)


def _windows_vm(inventory: Path, name: str, disk: Path, guest_id: str = "windows2019srv_64Guest") -> None:
    vm_dir = inventory / name
    vm_dir.mkdir(parents=True)
    shutil.copyfile(disk, vm_dir / "disk-0.raw")
    vm = {"name": name, "num_cpu": 2, "memory_mb": 4096, "firmware": "BIOS", "os_type": "windows",
          "guest_id": guest_id, "nics": [{"network_name": "VM Network"}],
          "disks": [{"id": "disk-0", "file": "disk-0.raw", "format": "raw"}]}
    (vm_dir / "vm.json").write_text(json.dumps(vm))


def _every_version(inventory: Path, images: dict[str, Path]) -> None:
    for version in VERSIONS:
        _windows_vm(inventory, version, images[version], GUEST_IDS[version])


def _events(migration: dict[str, Any], instance: str, task_type: str) -> list[str]:
    return [e["message"] for e in task(migration, instance, task_type)["events"]]


def _refused_naming(api: Any, fields: dict[str, Any], path: Path) -> None:
    """The migration fails in validation for every instance, naming ``path``; no disk is copied."""
    refused = wait_final(api, api.create_migration(**fields)["id"], timeout=300)
    assert refused["last_execution_status"] == "ERROR"
    for instance in fields["instances"]:
        validate = task(refused, instance, "VALIDATE_MIGRATION_INPUTS")
        assert validate["status"] == "ERROR"
        assert f"looked for {path}" in validate["exception_details"], validate
        assert task(refused, instance, "REPLICATE_DISKS")["status"] != "COMPLETED"


def _completed(final: dict[str, Any]) -> None:
    assert final["last_execution_status"] == "COMPLETED", [
        (t["instance"], t["task_type"], t["exception_details"]) for t in final["tasks"] if t["exception_details"]]


def _check_every_version(final: dict[str, Any], disks: dict[str, Readback], target: str, msi: bytes) -> None:
    """``windows_checks`` on each version's destination disk, and its changes as OS_MORPHING events."""
    service = "AWSNVMe" if target == "aws" else "viostor"
    failures = {}
    for version in VERSIONS:
        events = _events(final, version, "OS_MORPHING")
        try:
            for needle in (f"OS morphing for {target} done", f"Services\\{service}: Type=1",
                           "Start=0", f"cloudbase-init configuration for {target}", "firstboot.ps1",
                           "Group Policy\\Scripts\\Startup\\0\\", "SanPolicy=1", "RealTimeIsUniversal=1"):
                assert any(needle in e for e in events), (needle, events)
            checks.everything(disks[version], version, target, msi)
        except AssertionError as exc:
            failures[version] = str(exc)
    assert not failures, failures


@pytest.mark.parametrize("stack", ["sqlite"], indirect=True)
def test_windows_migration_validates_sources_then_injects_drivers(
        stack: RunningStack, windows_base_images: dict[str, Path], windows_sources: Any, tmp_path: Path) -> None:
    src, dst = stack.inventory("win-source"), stack.inventory("win-kvm")
    _windows_vm(src, "win-vm", windows_base_images["windows2019"])
    windows_dir = stack.root / "windows"
    assert not (windows_dir / "virtio-win").exists()
    with stack.client() as api:
        a = api.create_endpoint("win-source", "local", {"path": str(src)})
        b = api.create_endpoint("win-kvm", "local", {"path": str(dst)})
        fields: dict[str, Any] = dict(
            origin_endpoint_id=a["id"], destination_endpoint_id=b["id"], instances=["win-vm"],
            skip_os_morphing=False, network_map={"VM Network": "default"},
            destination_environment={"verify_boot": False})
        _refused_naming(api, fields, windows_dir / "virtio-win")

        # The operator drops the sources where Sterna looks by default.
        shutil.copytree(windows_sources.virtio_win, windows_dir / "virtio-win")
        if not (windows_dir / "CloudbaseInitSetup_x64.msi").exists():
            shutil.copyfile(windows_sources.cloudbase_init_msi, windows_dir / "CloudbaseInitSetup_x64.msi")
        done = wait_final(api, api.create_migration(**fields)["id"], timeout=900)

    _completed(done)
    events = _events(done, "win-vm", "OS_MORPHING")
    assert any("detected Windows Server 2019 Standard" in e for e in events), events
    for needle in ("HKLM\\SYSTEM\\ControlSet001\\Services\\viostor: Type=1", "Start=0",
                   "/Windows/Drivers/Sterna/viostor: driver package viostor", "firstboot.ps1",
                   "HKLM\\SOFTWARE\\Microsoft\\Windows\\CurrentVersion\\Group Policy\\Scripts\\Startup\\0\\0",
                   "SanPolicy=1", "RealTimeIsUniversal=1"):
        assert any(needle in e for e in events), (needle, events)

    out = json.loads((dst / "win-vm" / "vm.json").read_text())
    disk = dst / "win-vm" / out["disks"][0]["file"]
    rb = read_back({"win": disk}, tmp_path, out["disks"][0]["format"])["win"]
    assert rb.file("/Windows/System32/drivers/viostor.sys") == sys_bytes("viostor", "2k19", "amd64")
    service = rb.values("SYSTEM", "ControlSet001\\Services\\viostor")
    assert service is not None and service["Start"] == (4, 0)  # REG_DWORD 0: boot start
    assert "0CmdLine=C:\\Windows\\Sterna\\firstboot.cmd" in (
        rb.file("/Windows/System32/GroupPolicy/Machine/Scripts/scripts.ini") or b"")[2:].decode("utf-16-le")
    conf = (rb.file("/Windows/Sterna/cloudbase-init.conf") or b"").decode()
    assert "metadata_services=cloudbaseinit.metadata.services.configdrive.ConfigDriveService" in conf


def test_every_windows_version_to_openstack_lands_in_glance_converted(
        keystone_stack: KeystoneStack, windows_base_images: dict[str, Path], windows_sources: Any,
        tmp_path: Path) -> None:
    assert keystone_stack.cloud is not None
    cloud = keystone_stack.cloud
    src = keystone_stack.inventory("win-openstack-source")
    _every_version(src, windows_base_images)
    windows_dir = keystone_stack.root / "windows"
    msi = windows_dir / "CloudbaseInitSetup_x64.msi"
    assert not msi.exists()
    # virtio-win alone is not enough for OpenStack: its guests get their metadata through cloudbase-init.
    shutil.copytree(windows_sources.virtio_win, windows_dir / "virtio-win")
    with keystone_stack.as_user("alice") as api:
        origin = api.create_endpoint("win-lab", "local", {"path": str(src)})["id"]
        dest = api.create_endpoint("win-cloud", "openstack", {})["id"]
        fields: dict[str, Any] = dict(
            origin_endpoint_id=origin, destination_endpoint_id=dest, instances=VERSIONS, **MORPHED,
            network_map={"VM Network": "private"},
            destination_environment={"flavor_name": "m1.small", "verify_boot": False, "keep_static_ip": True})
        _refused_naming(api, fields, msi)
        shutil.copyfile(windows_sources.cloudbase_init_msi, msi)
        final = wait_final(api, api.create_migration(**fields)["id"], timeout=TIMEOUT)
    _completed(final)

    # Each guest's image in the real Glance, downloaded with Alice's own session.
    session = cloud.peers.session("alice")
    glance = cloud.peers.servers["glance"].url
    downloaded = {}
    for version in VERSIONS:
        disk = final["transfer_result"][version]["details"]["disks"][0]
        image = session.get(f"{glance}/v2/images/{disk['image_id']}").json()
        assert image["status"] == "active" and image["disk_format"] == "qcow2", image
        data = session.get(f"{glance}/v2/images/{disk['image_id']}/file").content
        assert hashlib.md5(data, usedforsecurity=False).hexdigest() == image["checksum"]
        downloaded[version] = tmp_path / f"{version}-from-glance.qcow2"
        downloaded[version].write_bytes(data)
    disks = read_back(downloaded, tmp_path, "qcow2")
    _check_every_version(final, disks, "openstack", windows_sources.cloudbase_init_msi.read_bytes())


@pytest.mark.parametrize("stack", ["sqlite"], indirect=True)
def test_every_windows_version_to_aws_lands_in_ebs_converted(
        stack: RunningStack, windows_base_images: dict[str, Path], windows_sources: Any, conn_info: dict[str, Any],
        ec2: Any, ebs: Any, subnet: dict[str, Any], tmp_path: Path) -> None:
    src = stack.inventory("win-aws-source")
    _every_version(src, windows_base_images)
    windows_dir = stack.root / "windows"
    assert not (windows_dir / "aws").exists()
    # Optional on AWS (installed when present): here, so that its EC2 configuration can be checked.
    windows_dir.mkdir(exist_ok=True)
    if not (windows_dir / "CloudbaseInitSetup_x64.msi").exists():
        shutil.copyfile(windows_sources.cloudbase_init_msi, windows_dir / "CloudbaseInitSetup_x64.msi")
    with stack.client() as api:
        origin = api.create_endpoint("win-aws-source", "local", {"path": str(src)})["id"]
        dest = api.create_endpoint("win-aws", "aws", conn_info)["id"]
        fields: dict[str, Any] = dict(
            origin_endpoint_id=origin, destination_endpoint_id=dest, instances=VERSIONS, **MORPHED,
            network_map={"VM Network": subnet["SubnetId"]},
            destination_environment={"flavor_name": "t3.medium", "keep_image": True, "verify_boot": False,
                                     "keep_static_ip": True, "security_group_ids": [subnet["GroupId"]]})
        # The AWS NVMe/ENA packages are missing: refused, naming where they were looked for.
        _refused_naming(api, fields, windows_dir / "aws")
        shutil.copytree(windows_sources.aws_drivers, windows_dir / "aws")
        final = wait_final(api, api.create_migration(**fields)["id"], timeout=TIMEOUT)
    _completed(final)

    # Each guest's imported EBS snapshot, read back through the EBS direct APIs.
    mine = [{"Name": "tag:sterna:migration-id", "Values": [final["id"]]},
            {"Name": "tag:sterna:role", "Values": ["import-snapshot"]}]
    snapshots = ec2.describe_snapshots(OwnerIds=["self"], Filters=mine)["Snapshots"]
    by_instance = {tag["Value"]: snap for snap in snapshots for tag in snap.get("Tags", [])
                   if tag["Key"] == "sterna:source-instance"}
    assert sorted(by_instance) == sorted(VERSIONS), snapshots
    downloaded = {}
    for version, snap in by_instance.items():
        downloaded[version] = tmp_path / f"{version}-from-ebs.raw"
        assert snapshot_to_file(ebs, snap["SnapshotId"], snap["VolumeSize"] * 1024**3, downloaded[version]) > 0
    disks = read_back(downloaded, tmp_path, "raw")
    _check_every_version(final, disks, "aws", windows_sources.cloudbase_init_msi.read_bytes())
