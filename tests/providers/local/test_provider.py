"""The local provider on real disk images (qemu-img, sfdisk, mkfs.ext4)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from core.errors import InvalidInput, NotFound
from core.models import ImportedDisk
from providers.local.domain import FLAVORS, stable_mac
from providers.local.provider import LocalProvider
from worker.sample import create_vm


@pytest.fixture
def inventory(tmp_path: Path) -> Path:
    create_vm(tmp_path / "inv", "vm-a", size=64 * 1024**2, data_mib=1)
    return tmp_path / "inv"


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


def test_deploy_writes_domain_with_flavor_and_mapped_network(inventory: Path, tmp_path: Path) -> None:
    dest_root = tmp_path / "dest"
    dest_root.mkdir()
    p = LocalProvider({"path": str(dest_root)})
    info = LocalProvider({"path": str(inventory)}).get_instance({}, "vm-a")
    env = {"migration_id": "m1", "flavor_name": "m1.medium", "network_map": {"VM Network": "br-int"}}
    p.validate_destination(env, info)
    (dest_root / "vm-a").mkdir()
    (dest_root / "vm-a" / ".sterna-migration").write_text("m1")
    disk = ImportedDisk(disk_id="disk-0", details={"path": str(dest_root / "vm-a" / "disk-0.qcow2"),
                                                   "format": "qcow2"})
    deployed = p.deploy_instance(env, info, [disk])
    xml = (dest_root / "vm-a" / "domain.xml").read_text()
    cpus, mem = FLAVORS["m1.medium"]
    assert f"<vcpu>{cpus}</vcpu>" in xml and f'<memory unit="MiB">{mem}</memory>' in xml
    assert 'network="br-int"' in xml and stable_mac("m1/vm-a/0") in xml and 'type="virtio"' in xml
    vm = json.loads((dest_root / "vm-a" / "vm.json").read_text())
    assert vm["num_cpu"] == cpus and deployed.id == "vm-a"
    # Cleanup after failure removes only what this migration created.
    assert p.cleanup(env, "vm-a", [disk], deployed, succeeded=False)
    assert not (dest_root / "vm-a").exists()


def test_destination_refuses_an_existing_instance(inventory: Path) -> None:
    p = LocalProvider({"path": str(inventory)})
    info = p.get_instance({}, "vm-a")
    with pytest.raises(InvalidInput, match="already exists"):
        p.validate_destination({"migration_id": "m2"}, info)
    assert p.cleanup({"migration_id": "m2"}, "vm-a", [], None, succeeded=False) == []
    assert (inventory / "vm-a" / "vm.json").exists()


def test_unknown_flavor_is_rejected(tmp_path: Path, inventory: Path) -> None:
    info = LocalProvider({"path": str(inventory)}).get_instance({}, "vm-a")
    with pytest.raises(InvalidInput, match="Unknown flavor"):
        LocalProvider({"path": str(tmp_path)}).validate_destination({"flavor_name": "huge"}, info)
