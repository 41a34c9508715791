"""OVA/OVF packages built with qemu-img and hand-written descriptors, parsed and exported."""

from __future__ import annotations

import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest

from core.errors import ConnectionFailed, InvalidInput, NotFound, TransferError
from diskio.base import DiskSource
from providers.ova.provider import OvaProvider
from tests.providers.ova.packages import VBOX_OVF, VMWARE_OVF, add_file, guest_disk, stream_optimized

MiB = 1024 * 1024


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The guest disks (raw) and a package library built from them, once per module."""
    if shutil.which("qemu-img") is None:
        pytest.fail("qemu-img (qemu-utils) is required: run make sysdeps")
    root = tmp_path_factory.mktemp("ova")
    lib = root / "library"
    lib.mkdir()
    guest_disk(root / "web01.raw", 24 * MiB, seed=1)
    stream_optimized(root / "web01.raw", root / "web01.vmdk")
    vmdk = (root / "web01.vmdk").read_bytes()
    ovf = VMWARE_OVF.format(vmdk_size=len(vmdk), capacity_mib=24).encode()
    with tarfile.open(lib / "web01.ova", "w", format=tarfile.USTAR_FORMAT) as tar:
        add_file(tar, "web01.ovf", ovf)  # the descriptor comes first, as the OVF spec requires
        add_file(tar, "web01-disk1.vmdk", vmdk)

    guest_disk(root / "db.raw", 16 * MiB, seed=2)
    stream_optimized(root / "db.raw", lib / "db-disk001.vmdk")
    (lib / "db.ovf").write_text(VBOX_OVF.format(capacity=16 * MiB))
    return root


@pytest.fixture
def library(images: Path, tmp_path: Path) -> Path:
    """A directory with a vSphere-style OVA and a VirtualBox-style OVF next to its disk (a fresh copy)."""
    lib = tmp_path / "library"
    shutil.copytree(images / "library", lib)
    for raw in images.glob("*.raw"):
        (tmp_path / raw.name).symlink_to(raw)
    return lib


def copy_extents(src: DiskSource, dst: Path) -> int:
    """Stand-in for the disk engine's copier: only the source's extents."""
    moved = 0
    with open(dst, "wb") as f:
        f.truncate(src.size)
        for extent in src.extents():
            for offset in range(extent.offset, extent.end, 4 * MiB):
                data = src.read(offset, min(4 * MiB, extent.end - offset))
                f.seek(offset)
                f.write(data)
                moved += len(data)
    return moved


def identical(a: Path, b: Path) -> bool:
    result = subprocess.run(
        ["qemu-img", "compare", "-q", "-f", "raw", "-F", "raw", str(a), str(b)], check=False
    )
    return result.returncode == 0


def test_vsphere_style_ova_is_parsed(library: Path) -> None:
    info = OvaProvider({"path": str(library)}).get_instance({}, "web01.ova")
    assert (info.name, info.num_cpu, info.memory_mb) == ("web01", 2, 2048)
    assert (info.firmware_type, info.secure_boot) == ("EFI", True)
    assert (info.guest_id, info.os_type) == ("debian11_64Guest", "linux")
    (disk,) = info.devices.disks
    assert (disk.id, disk.size_bytes, disk.format, disk.unit_number) == ("vmdisk1", 24 * MiB, "vmdk", 0)
    (nic,) = info.devices.nics
    assert (nic.network_name, nic.mac_address) == ("VM Network", "00:50:56:ab:cd:ef")
    assert info.devices.controllers[0]["type"] == "scsi"


def test_virtualbox_style_ovf_is_parsed(library: Path) -> None:
    info = OvaProvider({"path": str(library)}).get_instance({}, "db")
    assert (info.num_cpu, info.memory_mb, info.firmware_type) == (1, 1024, "EFI")
    assert info.guest_id == "Ubuntu_64"
    assert info.devices.disks[0].size_bytes == 16 * MiB
    (nic,) = info.devices.nics
    assert (nic.network_name, nic.mac_address) == ("NAT", "08:00:27:6e:2c:5d")


def test_listing_names_every_package(library: Path) -> None:
    provider = OvaProvider({"path": str(library)})
    provider.validate_connection()
    assert [i.id for i in provider.list_instances({})] == ["db.ovf", "web01.ova"]
    assert [i.id for i in provider.list_instances({}, name_filter="web")] == ["web01.ova"]


@pytest.mark.parametrize(("instance", "raw"), [("web01.ova", "web01.raw"), ("db.ovf", "db.raw")])
def test_disk_export_equals_the_source(library: Path, tmp_path: Path, instance: str, raw: str) -> None:
    provider = OvaProvider({"path": str(library)})
    provider.validate_source({}, instance)
    snap = provider.snapshot_instance({}, instance, tmp_path / "work")
    (disk,) = snap.disks
    src = provider.open_disk(snap, disk)
    try:
        moved = copy_extents(src, tmp_path / "copy.raw")
    finally:
        src.close()
    provider.delete_snapshot(snap)
    provider.delete_snapshot(snap)
    assert identical(tmp_path / raw, tmp_path / "copy.raw")
    assert moved < disk.size_bytes // 4  # only allocated grains were read


def test_changed_package_is_refused(library: Path, tmp_path: Path) -> None:
    provider = OvaProvider({"path": str(library)})
    snap = provider.snapshot_instance({}, "web01", tmp_path / "work")
    with open(library / "web01.ova", "ab") as f:
        f.write(bytes(512))
    with pytest.raises(TransferError, match="changed"):
        provider.open_disk(snap, snap.disks[0])


def test_errors_name_their_cause(library: Path, tmp_path: Path) -> None:
    with pytest.raises(NotFound, match="nope"):
        OvaProvider({"path": str(library)}).get_instance({}, "nope")
    with pytest.raises(ConnectionFailed, match="does not exist"):
        OvaProvider({"path": str(tmp_path / "missing")}).validate_connection()
    (library / "db.ovf").write_text(
        VBOX_OVF.format(capacity=16 * MiB).replace('ovf:id="file1"', 'ovf:id="file1" ovf:compression="gzip"')
    )
    with pytest.raises(InvalidInput, match="gzip"):
        OvaProvider({"path": str(library)}).validate_source({}, "db.ovf")
    (library / "db.ovf").write_text("<not-ovf/>")
    with pytest.raises(InvalidInput, match="not an OVF envelope"):
        OvaProvider({"path": str(library)}).get_instance({}, "db.ovf")


def test_registers_as_an_ova_source() -> None:
    assert OvaProvider.PLUGIN_NAME == "ova"
    assert OvaProvider.provider_types() == [8, 16, 32]
    assert OvaProvider.connection_info_schema()["required"] == ["path"]
