"""Windows guests migrated through the REST API with OS morphing, for kvm, openstack and aws.

Each target's test migrates every synthetic version, one VM each, in one migration (``_migrate_every_version``).
It first runs without what the target needs on the worker host: the migration fails at validation,
before any disk is copied, and the error names the path looked for. Then the operator drops the
sources where Sterna looks by default (``<data dir>/windows``) and the migration completes. The disks
the destination received are read back with libguestfs and hivex in one appliance and checked with
``windows_checks`` (drivers of that version, boot-start service, CriticalDeviceDatabase where used,
startup script, cloudbase-init for the target), and each version's changes against its
``OS_MORPHING`` events (``_check_every_version``):

* kvm (local -> local): the destination inventory's disk files, as each ``vm.json`` names them;
* openstack (local -> the real Glance, Keystone mode): the Glance images, downloaded with the user's own
  session;
* aws (local -> moto): the EBS snapshots the deployment reports, read with the EBS direct APIs. On
  transfers each is a child of its replica snapshot holding what the morph changed, and reads whole as
  on AWS (``ebs_inheritance``).

The instances of one migration are morphed concurrently (one appliance each, up to the worker's
``max_disk_activities``). No boot: that needs a real Windows image (README, Windows).
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import RunningStack, task, wait_final
from tests.guests.trees import WINDOWS_VERSIONS
from tests.guests.windows import Readback, read_back
from tests.leftovers import deployments_of
from tests.osmorphing import windows_checks as checks
from tests.osmorphing.conftest import VERSIONS
from tests.peers.moto import conn_info, ebs, ebs_inheritance, ec2, moto_url, subnet
from tests.peers.openstack.fixtures import KeystoneStack
from tests.providers.aws.awshelpers import snapshot_to_file

pytestmark = [pytest.mark.slow]
__all__ = ["conn_info", "ebs", "ebs_inheritance", "ec2", "moto_url", "subnet"]
#: a migration of seven Windows guests: seven appliances under TCG, four at a time, on a shared machine
TIMEOUT = 1800
#: VMware's guest id for each synthetic version (what a VMware export records)
GUEST_IDS = {"windows2008r2": "windows7Server64Guest", "windows2012r2": "windows8Server64Guest",
             "windows2016": "windows9Server64Guest", "windows2019": "windows2019srv_64Guest",
             "windows2022": "windows2019srvNext_64Guest", "windows10": "windows9_64Guest",
             "windows11": "windows11_64Guest"}
#: an event of one change to the guest (``osmorphing.models.Change.line``)
CHANGE_EVENT = re.compile(r"(created|modified|deleted) |ran in guest: ")
#: the folders that hold only what Sterna wrote (the synthetic guests have neither)
STERNA_DIRS = ("/Windows/Drivers/Sterna", "/Windows/Sterna")


def _windows_vm(inventory: Path, name: str, disk: Path, guest_id: str) -> None:
    vm_dir = inventory / name
    vm_dir.mkdir(parents=True)
    shutil.copyfile(disk, vm_dir / "disk-0.raw")
    vm = {"name": name, "num_cpu": 2, "memory_mb": 4096, "firmware": "BIOS", "os_type": "windows",
          "guest_id": guest_id, "nics": [{"network_name": "VM Network"}],
          "disks": [{"id": "disk-0", "file": "disk-0.raw", "format": "raw"}]}
    (vm_dir / "vm.json").write_text(json.dumps(vm))


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


def _supply_msi(windows_dir: Path, sources: Any) -> None:
    """The cloudbase-init MSI where Sterna looks by default (the stack may have it from another test)."""
    windows_dir.mkdir(exist_ok=True)
    if not (windows_dir / "CloudbaseInitSetup_x64.msi").exists():
        shutil.copyfile(sources.cloudbase_init_msi, windows_dir / "CloudbaseInitSetup_x64.msi")


def _migrate_every_version(api: Any, src: Path, images: dict[str, Path], destination: str, network: str,
                           environment: dict[str, Any], missing: Path, supply: Callable[[], object]) -> dict[str, Any]:
    """Every version from a new ``src`` inventory to ``destination`` in one migration, morphed with
    ``keep_static_ip`` and the checks' user script: refused at validation naming ``missing``, then,
    once ``supply()`` has put it there, completed. Returns the final migration."""
    for version in VERSIONS:
        _windows_vm(src, version, images[version], GUEST_IDS[version])
    origin = api.create_endpoint(src.name, "local", {"path": str(src)})["id"]
    fields: dict[str, Any] = dict(
        origin_endpoint_id=origin, destination_endpoint_id=destination, instances=VERSIONS,
        skip_os_morphing=False, user_scripts=checks.USER_SCRIPTS, network_map={"VM Network": network},
        destination_environment={"verify_boot": False, "keep_static_ip": True, **environment})
    assert not missing.exists()
    _refused_naming(api, fields, missing)
    supply()
    final = wait_final(api, api.create_migration(**fields)["id"], timeout=TIMEOUT)
    assert final["last_execution_status"] == "COMPLETED", [
        (t["instance"], t["task_type"], t["exception_details"]) for t in final["tasks"] if t["exception_details"]]
    return final


def _every_change_is_an_event(events: list[str], rb: Readback, target: str) -> None:
    """The morph that made this disk announced each of its changes as an ``OS_MORPHING`` event, and
    each file in Sterna's folders on the disk is one of them (a driver package is one change)."""
    starts = [i for i, e in enumerate(events) if e.startswith("inspecting ")]
    assert starts, events
    start = starts[-1]  # the last attempt's, if the step was retried
    ends = [i for i in range(start, len(events)) if events[i].startswith(f"OS morphing for {target} done: ")]
    assert ends, events
    count = re.match(r"OS morphing for \S+ done: (\d+) change", events[ends[0]])
    assert count is not None and int(count[1]) > 0, events[ends[0]]
    announced = [e for e in events[start:ends[0]] if CHANGE_EVENT.match(e)]
    assert len(announced) == int(count[1]), (events[ends[0]], announced)
    written = [path for path in rb.files for top in STERNA_DIRS if path.startswith(top.lower() + "/")]
    assert written
    lowered = [e.lower() for e in announced]
    for path in written:
        # The file's own event, or its driver package's, which names the package's files.
        subjects = [(path, "")] + [(path[:i], path[i + 1:]) for i in range(len(path)) if path[i] == "/"]
        assert any(e.startswith((f"created {subject}: ", f"modified {subject}: ")) and rest in e
                   for subject, rest in subjects for e in lowered), path


def _check_every_version(final: dict[str, Any], disks: dict[str, Readback], target: str, msi: bytes) -> None:
    """``windows_checks`` on each version's destination disk, and its changes as OS_MORPHING events."""
    service = "AWSNVMe" if target == "aws" else "viostor"
    failures = {}
    for version in VERSIONS:
        events = _events(final, version, "OS_MORPHING")
        try:
            # This VM's own guest was inspected: each synthetic version has a build number of its own.
            build = WINDOWS_VERSIONS[version]["CurrentBuildNumber"]
            assert any(e.startswith("detected Windows") and f"build {build}," in e for e in events), events
            for needle in (f"Services\\{service}: Type=1", "Start=0", f"cloudbase-init configuration for {target}",
                           "firstboot.ps1", "Group Policy\\Scripts\\Startup\\0\\", "SanPolicy=1",
                           "RealTimeIsUniversal=1"):
                assert any(needle in e for e in events), (needle, events)
            _every_change_is_an_event(events, disks[version], target)
            checks.everything(disks[version], version, target, msi)
        except AssertionError as exc:
            failures[version] = str(exc)
    assert not failures, failures


@pytest.mark.parametrize("stack", ["sqlite"], indirect=True)
def test_every_windows_version_to_kvm_lands_in_the_local_inventory_converted(
        stack: RunningStack, windows_base_images: dict[str, Path], windows_sources: Any, tmp_path: Path) -> None:
    dst = stack.inventory("win-kvm")
    windows_dir = stack.root / "windows"

    def supply() -> None:
        shutil.copytree(windows_sources.virtio_win, windows_dir / "virtio-win")
        _supply_msi(windows_dir, windows_sources)  # optional on kvm: here, so that its configuration can be checked

    with stack.client() as api:
        dest = api.create_endpoint("win-kvm", "local", {"path": str(dst)})["id"]
        final = _migrate_every_version(api, stack.inventory("win-kvm-source"), windows_base_images, dest, "default",
                                       {}, windows_dir / "virtio-win", supply)

    # Each guest's disk in the destination inventory, as its vm.json names it.
    disks, formats = {}, set()
    for version in VERSIONS:
        [disk] = json.loads((dst / version / "vm.json").read_text())["disks"]
        disks[version] = dst / version / disk["file"]
        formats.add(disk["format"])
    [fmt] = formats
    _check_every_version(final, read_back(disks, tmp_path, fmt), "kvm", windows_sources.cloudbase_init_msi.read_bytes())


def test_every_windows_version_to_openstack_lands_in_glance_converted(
        keystone_stack: KeystoneStack, windows_base_images: dict[str, Path], windows_sources: Any,
        tmp_path: Path) -> None:
    assert keystone_stack.cloud is not None
    cloud = keystone_stack.cloud
    windows_dir = keystone_stack.root / "windows"
    # virtio-win alone is not enough for OpenStack: its guests get their metadata through cloudbase-init.
    shutil.copytree(windows_sources.virtio_win, windows_dir / "virtio-win")
    with keystone_stack.as_user("alice") as api:
        dest = api.create_endpoint("win-cloud", "openstack", {})["id"]
        final = _migrate_every_version(
            api, keystone_stack.inventory("win-openstack-source"), windows_base_images, dest, "private",
            {"flavor_name": "m1.small"}, windows_dir / "CloudbaseInitSetup_x64.msi",
            lambda: _supply_msi(windows_dir, windows_sources))

    # Each guest's image in the real Glance, downloaded with Alice's own session.
    session = cloud.peers.session("alice")
    glance = cloud.peers.servers["glance"].url
    downloaded = {}
    for version in VERSIONS:
        disk = final["transfer_result"][version]["details"]["disks"][0]
        image = session.get(f"{glance}/v2/images/{disk['image_id']}").json()
        assert image["status"] == "active" and image["disk_format"] == "qcow2", image
        assert image["os_type"] == "windows", image  # Nova's cue for a local-time RTC and Hyper-V enlightenments
        data = session.get(f"{glance}/v2/images/{disk['image_id']}/file").content
        assert hashlib.md5(data, usedforsecurity=False).hexdigest() == image["checksum"]
        downloaded[version] = tmp_path / f"{version}-from-glance.qcow2"
        downloaded[version].write_bytes(data)
    disks = read_back(downloaded, tmp_path, "qcow2")
    _check_every_version(final, disks, "openstack", windows_sources.cloudbase_init_msi.read_bytes())


@pytest.mark.parametrize("stack", ["sqlite"], indirect=True)
@pytest.mark.usefixtures("ebs_inheritance")
def test_every_windows_version_to_aws_lands_in_ebs_converted(
        stack: RunningStack, windows_base_images: dict[str, Path], windows_sources: Any, conn_info: dict[str, Any],
        ec2: Any, ebs: Any, subnet: dict[str, Any], tmp_path: Path) -> None:
    windows_dir = stack.root / "windows"
    # Optional on AWS (installed when present): here, so that its EC2 configuration can be checked.
    _supply_msi(windows_dir, windows_sources)
    with stack.client() as api:
        dest = api.create_endpoint("win-aws", "aws", conn_info)["id"]
        # The AWS NVMe/ENA packages are missing at first: refused, naming where they were looked for.
        final = _migrate_every_version(
            api, stack.inventory("win-aws-source"), windows_base_images, dest, subnet["SubnetId"],
            {"flavor_name": "t3.medium", "keep_image": True, "security_group_ids": [subnet["GroupId"]]},
            windows_dir / "aws", lambda: shutil.copytree(windows_sources.aws_drivers, windows_dir / "aws"))

    # Each guest's imported EBS snapshot, read back through the EBS direct APIs. It is tagged with the action
    # that wrote it: the migration, or on transfers the deployment it made (the morphed disk is the
    # deployment's upload, a child of the replica snapshot). One per guest, and the one its instance boots
    # from, as the migration's transfer_result reports it.
    actions = [final["id"], *deployments_of(stack, final)]
    mine = [{"Name": "tag:sterna:migration-id", "Values": actions},
            {"Name": "tag:sterna:role", "Values": ["import-snapshot"]}]
    snapshots = ec2.describe_snapshots(OwnerIds=["self"], Filters=mine)["Snapshots"]
    instances = [tag["Value"] for snap in snapshots for tag in snap.get("Tags", [])
                 if tag["Key"] == "sterna:source-instance"]
    assert sorted(instances) == sorted(VERSIONS), snapshots
    by_instance = {tag["Value"]: snap for snap in snapshots for tag in snap.get("Tags", [])
                   if tag["Key"] == "sterna:source-instance"}
    downloaded = {}
    for version, snap in by_instance.items():
        assert final["transfer_result"][version]["details"]["snapshot_ids"] == [snap["SnapshotId"]], version
        downloaded[version] = tmp_path / f"{version}-from-ebs.raw"
        assert snapshot_to_file(ebs, snap["SnapshotId"], snap["VolumeSize"] * 1024**3, downloaded[version]) > 0
    disks = read_back(downloaded, tmp_path, "raw")
    _check_every_version(final, disks, "aws", windows_sources.cloudbase_init_msi.read_bytes())
