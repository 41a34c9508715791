"""OVA/OVF packages built with qemu-img and hand-written descriptors, parsed and exported."""

from __future__ import annotations

import io
import random
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest

from core.errors import ConnectionFailed, InvalidInput, NotFound, TransferError
from diskio.base import DiskSource
from providers.ova.provider import OvaProvider

MiB = 1024 * 1024

VMWARE_OVF = """<?xml version="1.0" encoding="UTF-8"?>
<Envelope vmw:buildId="build-1" xmlns="http://schemas.dmtf.org/ovf/envelope/1"
  xmlns:ovf="http://schemas.dmtf.org/ovf/envelope/1"
  xmlns:rasd="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_ResourceAllocationSettingData"
  xmlns:vssd="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_VirtualSystemSettingData"
  xmlns:vmw="http://www.vmware.com/schema/ovf">
  <References><File ovf:href="web01-disk1.vmdk" ovf:id="file1" ovf:size="{vmdk_size}"/></References>
  <DiskSection><Info>Virtual disk information</Info>
    <Disk ovf:capacity="{capacity_mib}" ovf:capacityAllocationUnits="byte * 2^20" ovf:diskId="vmdisk1"
      ovf:fileRef="file1" ovf:format="http://www.vmware.com/interfaces/specifications/vmdk.html#streamOptimized"/>
  </DiskSection>
  <NetworkSection><Info>The list of logical networks</Info>
    <Network ovf:name="VM Network"><Description>The VM Network network</Description></Network>
  </NetworkSection>
  <VirtualSystem ovf:id="web01">
    <Info>A virtual machine</Info><Name>web01</Name>
    <OperatingSystemSection ovf:id="96" vmw:osType="debian11_64Guest"><Info>OS</Info>
      <Description>Debian GNU/Linux 11 (64-bit)</Description></OperatingSystemSection>
    <VirtualHardwareSection><Info>Virtual hardware requirements</Info>
      <System><vssd:VirtualSystemType>vmx-19</vssd:VirtualSystemType></System>
      <Item><rasd:AllocationUnits>hertz * 10^6</rasd:AllocationUnits><rasd:InstanceID>1</rasd:InstanceID>
        <rasd:ResourceType>3</rasd:ResourceType><rasd:VirtualQuantity>2</rasd:VirtualQuantity></Item>
      <Item><rasd:AllocationUnits>byte * 2^20</rasd:AllocationUnits><rasd:InstanceID>2</rasd:InstanceID>
        <rasd:ResourceType>4</rasd:ResourceType><rasd:VirtualQuantity>2048</rasd:VirtualQuantity></Item>
      <Item><rasd:InstanceID>3</rasd:InstanceID><rasd:ResourceSubType>VirtualSCSI</rasd:ResourceSubType>
        <rasd:ResourceType>6</rasd:ResourceType></Item>
      <Item><rasd:AddressOnParent>0</rasd:AddressOnParent><rasd:ElementName>Hard disk 1</rasd:ElementName>
        <rasd:HostResource>ovf:/disk/vmdisk1</rasd:HostResource><rasd:InstanceID>4</rasd:InstanceID>
        <rasd:Parent>3</rasd:Parent><rasd:ResourceType>17</rasd:ResourceType></Item>
      <Item><rasd:Address>00:50:56:ab:cd:ef</rasd:Address><rasd:AddressOnParent>7</rasd:AddressOnParent>
        <rasd:Connection>VM Network</rasd:Connection><rasd:ElementName>Network adapter 1</rasd:ElementName>
        <rasd:InstanceID>5</rasd:InstanceID><rasd:ResourceSubType>VmxNet3</rasd:ResourceSubType>
        <rasd:ResourceType>10</rasd:ResourceType></Item>
      <vmw:Config ovf:required="false" vmw:key="firmware" vmw:value="efi"/>
      <vmw:Config ovf:required="false" vmw:key="bootOptions.efiSecureBootEnabled" vmw:value="true"/>
    </VirtualHardwareSection>
  </VirtualSystem>
</Envelope>
"""

VBOX_OVF = """<?xml version="1.0"?>
<Envelope ovf:version="1.0" xml:lang="en-US" xmlns="http://schemas.dmtf.org/ovf/envelope/1"
  xmlns:ovf="http://schemas.dmtf.org/ovf/envelope/1"
  xmlns:rasd="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_ResourceAllocationSettingData"
  xmlns:vbox="http://www.virtualbox.org/ovf/machine">
  <References><File ovf:id="file1" ovf:href="db-disk001.vmdk"/></References>
  <DiskSection><Info>List of the virtual disks used in the package</Info>
    <Disk ovf:capacity="{capacity}" ovf:diskId="vmdisk1" ovf:fileRef="file1"
      ovf:format="http://www.vmware.com/interfaces/specifications/vmdk.html#streamOptimized"/>
  </DiskSection>
  <NetworkSection><Info>Logical networks</Info>
    <Network ovf:name="NAT"><Description>NAT</Description></Network>
  </NetworkSection>
  <VirtualSystem ovf:id="db">
    <Info>A virtual machine</Info>
    <OperatingSystemSection ovf:id="94"><Info>The kind of installed guest OS</Info>
      <Description>Ubuntu_64</Description><vbox:OSType ovf:required="false">Ubuntu_64</vbox:OSType>
    </OperatingSystemSection>
    <VirtualHardwareSection><Info>Virtual hardware requirements for a virtual machine</Info>
      <Item><rasd:Caption>1 virtual CPU</rasd:Caption><rasd:InstanceID>1</rasd:InstanceID>
        <rasd:ResourceType>3</rasd:ResourceType><rasd:VirtualQuantity>1</rasd:VirtualQuantity></Item>
      <Item><rasd:AllocationUnits>MegaBytes</rasd:AllocationUnits><rasd:InstanceID>2</rasd:InstanceID>
        <rasd:ResourceType>4</rasd:ResourceType><rasd:VirtualQuantity>1024</rasd:VirtualQuantity></Item>
      <Item><rasd:InstanceID>3</rasd:InstanceID><rasd:ResourceSubType>AHCI</rasd:ResourceSubType>
        <rasd:ResourceType>20</rasd:ResourceType></Item>
      <Item><rasd:AutomaticAllocation>true</rasd:AutomaticAllocation><rasd:Connection>NAT</rasd:Connection>
        <rasd:ElementName>Ethernet adapter on 'NAT'</rasd:ElementName><rasd:InstanceID>4</rasd:InstanceID>
        <rasd:ResourceSubType>E1000</rasd:ResourceSubType><rasd:ResourceType>10</rasd:ResourceType></Item>
      <Item><rasd:AddressOnParent>0</rasd:AddressOnParent><rasd:HostResource>/disk/vmdisk1</rasd:HostResource>
        <rasd:InstanceID>5</rasd:InstanceID><rasd:Parent>3</rasd:Parent><rasd:ResourceType>17</rasd:ResourceType>
      </Item>
    </VirtualHardwareSection>
    <vbox:Machine ovf:required="false" version="1.16-linux" name="db">
      <Hardware><Firmware type="EFI"/>
        <Network><Adapter slot="0" enabled="true" MACAddress="0800276E2C5D" type="82540EM"><NAT/></Adapter>
        </Network>
      </Hardware>
    </vbox:Machine>
  </VirtualSystem>
</Envelope>
"""


def guest_disk(path: Path, size: int, seed: int) -> None:
    rnd = random.Random(seed)
    with open(path, "wb") as f:
        f.truncate(size)
        for offset in (0, size // 3, size - 200_000):
            f.seek(offset)
            f.write(rnd.randbytes(200_000))


def stream_optimized(raw: Path, vmdk: Path) -> None:
    subprocess.run(
        [
            "qemu-img",
            "convert",
            "-f",
            "raw",
            "-O",
            "vmdk",
            "-o",
            "subformat=streamOptimized",
            str(raw),
            str(vmdk),
        ],
        check=True,
    )


def add_file(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


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
