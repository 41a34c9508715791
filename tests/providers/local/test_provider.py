"""The local provider on real disk images (qemu-img, sfdisk, mkfs.ext4)."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from core.errors import InvalidInput, NotFound
from core.models import ImportedDisk
from core.settings import get_settings, reset_settings
from devstack.sample import create_vm
from providers.base import ActionContext
from providers.local.domain import FLAVORS, stable_mac
from providers.local.provider import LocalProvider


@pytest.fixture(autouse=True)
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Sterna's data dir for these tests: local endpoints may live only under its ``inventories/``."""
    monkeypatch.setenv("STERNA_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.delenv("STERNA_LOCAL_ROOTS", raising=False)
    reset_settings()
    yield tmp_path / "data"
    reset_settings()


@pytest.fixture
def inventory(data_dir: Path) -> Path:
    create_vm(data_dir / "inventories" / "inv", "vm-a", size=64 * 1024**2, data_mib=1)
    return data_dir / "inventories" / "inv"


def test_inventory_reads_vm_json_and_image_size(inventory: Path) -> None:
    p = LocalProvider({"path": str(inventory)})
    [vm] = p.list_instances({})
    assert vm.name == "vm-a" and vm.devices.disks[0].size_bytes == 64 * 1024**2
    assert vm.devices.nics[0].network_name == "VM Network"
    with pytest.raises(NotFound):
        p.get_instance({}, "missing")
    with pytest.raises(InvalidInput):
        p.get_instance({}, "../etc")


def test_snapshot_is_a_read_only_copy_and_is_idempotent(inventory: Path, tmp_path: Path) -> None:
    p = LocalProvider({"path": str(inventory)})
    snap = p.snapshot_instance({}, "vm-a", tmp_path / "work")
    copy = Path(snap.disks[0].path or "")
    assert copy.read_bytes() == (inventory / "vm-a" / "disk-0.raw").read_bytes()
    assert copy.stat().st_mode & 0o222 == 0
    assert p.snapshot_instance({}, "vm-a", tmp_path / "work") == snap
    p.delete_snapshot(snap)
    p.delete_snapshot(snap)
    assert not copy.exists()


def test_deploy_writes_domain_with_flavor_and_mapped_network(inventory: Path, data_dir: Path) -> None:
    dest_root = data_dir / "inventories" / "dest"
    dest_root.mkdir()
    p = LocalProvider({"path": str(dest_root)})
    info = LocalProvider({"path": str(inventory)}).get_instance({}, "vm-a")
    env, action = {"flavor_name": "m1.medium"}, ActionContext(action_id="m1", network_map={"VM Network": "br-int"})
    p.validate_destination(env, info, action)
    (dest_root / "vm-a").mkdir()
    (dest_root / "vm-a" / ".sterna-migration").write_text("m1")
    disk = ImportedDisk(disk_id="disk-0", details={"path": str(dest_root / "vm-a" / "disk-0.qcow2"),
                                                   "format": "qcow2"})
    deployed = p.deploy_instance(env, info, [disk], action)
    xml = (dest_root / "vm-a" / "domain.xml").read_text()
    cpus, mem = FLAVORS["m1.medium"]
    assert f"<vcpu>{cpus}</vcpu>" in xml and f'<memory unit="MiB">{mem}</memory>' in xml
    assert 'network="br-int"' in xml and stable_mac("m1/vm-a/0") in xml and 'type="virtio"' in xml
    vm = json.loads((dest_root / "vm-a" / "vm.json").read_text())
    assert vm["num_cpu"] == cpus and deployed.id == "vm-a"
    # Cleanup after failure removes only what this migration created.
    assert p.cleanup(env, "vm-a", [disk], deployed, succeeded=False, action=action)
    assert not (dest_root / "vm-a").exists()


def test_destination_refuses_an_existing_instance(inventory: Path) -> None:
    p = LocalProvider({"path": str(inventory)})
    info = p.get_instance({}, "vm-a")
    with pytest.raises(InvalidInput, match="already exists"):
        p.validate_destination({}, info, ActionContext(action_id="m2"))
    assert p.cleanup({}, "vm-a", [], None, succeeded=False, action=ActionContext(action_id="m2")) == []
    assert (inventory / "vm-a" / "vm.json").exists()


def test_unknown_flavor_is_rejected(data_dir: Path, inventory: Path) -> None:
    info = LocalProvider({"path": str(inventory)}).get_instance({}, "vm-a")
    with pytest.raises(InvalidInput, match="Unknown flavor"):
        LocalProvider({"path": str(data_dir / "inventories")}).validate_destination({"flavor_name": "huge"}, info)


# -- confinement (issue 11, reproducer 11) -----------------------------------------------------------
@pytest.mark.parametrize("path", ["/", "/etc", "{data}", "{data}/scratch", "{data}/inventories/../..",
                                  "{data}/inventories/../scratch", "{tmp}/elsewhere"])
def test_endpoint_paths_outside_the_allowed_roots_are_refused(data_dir: Path, path: str) -> None:
    path = path.format(data=data_dir, tmp=data_dir.parent)
    with pytest.raises(InvalidInput, match=r"not under an allowed root|overlaps Sterna's own data"):
        LocalProvider({"path": path})


def test_a_symlink_out_of_the_roots_is_followed_and_refused(data_dir: Path) -> None:
    (data_dir / "inventories").mkdir(parents=True)
    (data_dir / "inventories" / "link").symlink_to("/etc")
    with pytest.raises(InvalidInput, match="not under an allowed root"):
        LocalProvider({"path": str(data_dir / "inventories" / "link")})


def test_operator_roots_never_open_sterna_own_files(data_dir: Path, tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STERNA_LOCAL_ROOTS", json.dumps(["/", str(tmp_path / "vms")]))
    reset_settings()
    (tmp_path / "vms").mkdir()
    assert LocalProvider({"path": str(tmp_path / "vms")}).root == tmp_path / "vms"
    for path in ("/", str(data_dir), str(data_dir / "scratch" / "m1"), str(tmp_path)):
        with pytest.raises(InvalidInput, match="overlaps Sterna's own data"):
            LocalProvider({"path": path})
    # With roots of its own, the operator no longer gets the default one.
    assert get_settings().local_allowed_roots == [Path("/"), tmp_path / "vms"]


def _vm_json(inventory: Path, **disk: str) -> None:
    vm = json.loads((inventory / "vm-a" / "vm.json").read_text())
    vm["disks"][0].update(disk)
    (inventory / "vm-a" / "vm.json").write_text(json.dumps(vm))


@pytest.mark.parametrize("file", ["../../../secret.key", "/etc/passwd", "../vm-b/disk-0.raw", ".", "link.raw"])
def test_disk_files_must_stay_inside_the_vm_folder(inventory: Path, data_dir: Path, file: str) -> None:
    # The case: a disk file of <data dir>/secret.key copied Sterna's key into a destination disk.
    (data_dir / "secret.key").write_text("key")
    (inventory / "vm-a" / "link.raw").symlink_to(data_dir / "secret.key")
    _vm_json(inventory, file=file)
    with pytest.raises(InvalidInput, match="lies outside"):
        LocalProvider({"path": str(inventory)}).get_instance({}, "vm-a")


def test_disk_ids_are_sanitised_before_they_become_file_names(inventory: Path, data_dir: Path) -> None:
    _vm_json(inventory, id="../../../../escaped")
    p = LocalProvider({"path": str(inventory)})
    work = data_dir / "scratch" / "m1" / "vm-a"
    snap = p.snapshot_instance({}, "vm-a", work)
    copy = Path(snap.disks[0].path or "")
    assert copy.parent == work / "snapshot" and copy.name == "_.._.._.._escaped.raw"
    assert [f.name for f in data_dir.parent.rglob("*escaped*")] == [copy.name]


def test_instance_folders_that_are_symlinks_out_are_refused(inventory: Path, data_dir: Path) -> None:
    shutil.copytree(inventory / "vm-a", data_dir / "outside-vm")
    (inventory / "vm-x").symlink_to(data_dir / "outside-vm")
    p = LocalProvider({"path": str(inventory)})
    assert [vm.name for vm in p.list_instances({})] == ["vm-a"]
    with pytest.raises(InvalidInput, match="lies outside"):
        p.get_instance({}, "vm-x")


def test_qcow2_snapshots_rotate_one_dirty_bitmap_per_transfer(inventory: Path, tmp_path: Path) -> None:
    import subprocess

    from diskio import bitmaps
    from diskio.base import Extent

    create_vm(inventory, "vm-q", size=64 * 1024**2, data_mib=1)
    vm = inventory / "vm-q"
    disk = vm / "disk-0.qcow2"
    subprocess.run(["qemu-img", "convert", "-f", "raw", "-O", "qcow2", str(vm / "disk-0.raw"), str(disk)], check=True)
    meta = json.loads((vm / "vm.json").read_text())
    meta["disks"] = [{"id": "disk-0", "file": "disk-0.qcow2", "format": "qcow2"}]
    (vm / "vm.json").write_text(json.dumps(meta))
    p = LocalProvider({"path": str(inventory)})
    env: dict[str, Any] = {}
    action = ActionContext(change_tracking="t1")

    first = p.snapshot_instance(env, "vm-q", tmp_path / "run1", action)
    marker = first.disks[0].details["change_marker"]
    assert bitmaps.bitmaps(disk) == [marker]
    assert p.snapshot_instance(env, "vm-q", tmp_path / "run1", action).disks[0].details["change_marker"] == marker
    subprocess.run(["qemu-io", "-f", "qcow2", "-c", "write -P 7 8M 64k", str(disk)], check=True, capture_output=True)

    second = p.snapshot_instance(env, "vm-q", tmp_path / "run2", action)
    newer = second.disks[0].details["change_marker"]
    assert newer != marker and bitmaps.bitmaps(disk) == [newer], "older bitmaps leave the source"
    assert p.changed_extents(second, second.disks[0], marker) == [Extent(8 * 1024**2, 64 * 1024)]
    assert p.changed_extents(second, second.disks[0], "sterna-t1-1") is None, "an unknown marker: compare all"
    # A migration (no change tracking) adds nothing to the source.
    assert "change_marker" not in p.snapshot_instance({}, "vm-q", tmp_path / "run3").disks[0].details
    assert bitmaps.bitmaps(disk) == [newer]
    assert p.release_tracking(env, "vm-q", "t1") == [f"Removed dirty bitmap {newer} from {disk}"]
    assert bitmaps.bitmaps(disk) == [] and p.release_tracking(env, "vm-q", "t1") == []


def test_upload_retried_after_its_move_with_the_moves_checkpoint_keeps_the_disk(inventory: Path, data_dir: Path,
                                                                                tmp_path: Path) -> None:
    # A worker killed after the converted image was moved in, before the upload returned: the retry gets
    # the move's heartbeat (a full checkpoint) and no source file. It failed with FileNotFoundError.
    import asyncio
    import subprocess

    from core.models import DiskLocator
    from providers.base import ActionContext, TransferContext, TransferProgress

    dest_root = data_dir / "inventories" / "dest"
    dest_root.mkdir(parents=True)
    p = LocalProvider({"path": str(dest_root)})
    info = LocalProvider({"path": str(inventory)}).get_instance({}, "vm-a")
    image = tmp_path / "convert" / "disk-0.qcow2"
    image.parent.mkdir()
    subprocess.run(["qemu-img", "convert", "-f", "raw", "-O", "qcow2", str(inventory / "vm-a" / "disk-0.raw"),
                    str(image)], check=True)
    expected = image.read_bytes()
    beats: list[TransferProgress] = []

    async def progress(p: TransferProgress) -> None:
        beats.append(p)

    disk = DiskLocator(disk_id="disk-0", size_bytes=info.devices.disks[0].size_bytes, format="qcow2", path=str(image))
    env: dict[str, str] = {}
    action = ActionContext(action_id="m-1", instance="vm-a")
    first = asyncio.run(p.import_disk(env, info, disk, TransferContext(workdir=tmp_path, progress=progress), action))
    assert not image.exists() and beats[-1].checkpoint
    again = asyncio.run(p.import_disk(env, info, disk, TransferContext(
        workdir=tmp_path, progress=progress, checkpoint=list(beats[-1].checkpoint)), action))
    assert again == first
    assert Path(first.details["path"]).read_bytes() == expected
