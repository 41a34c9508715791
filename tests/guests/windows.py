"""Synthetic Windows disks, the operator-style driver sources, and reading a converted disk back.

- ``build_sources(dir)`` writes what an operator supplies: a virtio-win tree with its real
  ``<driver>/<os>/<arch>`` layout and INF syntax, AWS's unpacked NVMe and ENA packages, and a
  cloudbase-init MSI. The bytes of the ``.sys``/``.cat``/``.msi`` files are not real drivers; each
  ``.sys`` names its driver, OS directory and arch, so a test can tell which one was copied.
- ``build_images(dir, names)`` makes one raw disk per Windows version, in one libguestfs appliance: an
  MBR partition with NTFS (mkntfs), the SOFTWARE and SYSTEM hives made with hivex, ``cmd.exe`` (a PE
  header, which libguestfs inspection reads for the architecture), VMware Tools' services and
  uninstall entry, a static IPv4 address and the page file on ``D:``. ``cached_images`` keeps them
  under ``~/.cache/sterna/windows-images/<key>``, keyed by what makes them, as the Debian guest is.
- ``read_back(disks)`` opens converted disks read-only in one appliance and returns what a check needs:
  the files Sterna writes and both hives (read with hivex).

Against a real Windows disk, an operator runs the same conversion and read-back::

    .venv/bin/python -m tests.guests.windows COPY-OF-DISK.qcow2 --format qcow2 --target kvm

which converts the copy in place with the host's configured sources (``STERNA_VIRTIO_WIN``...) and
prints what it finds. Whether Windows then boots is only proven by booting it.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import posixpath
import shutil
import struct
import subprocess
import tarfile
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from devstack.guest import cache_root
from osmorphing.libguestfs_guest import load_guestfs
from osmorphing.system import import_system
from tests.guests import trees, winhive
from tests.guests.trees import WINDOWS_VERSIONS
from tests.guests.winhive import make_hive
from tests.peers import cache_lock

IMAGE_BYTES = 40 * 1024 * 1024
#: virtio-win drivers of the fixture tree: dir -> (inf/sys base name, class, class GUID, PCI device ids)
VIRTIO_DRIVERS = {
    "viostor": ("viostor", "SCSIAdapter", "{4D36E97B-E325-11CE-BFC1-08002BE10318}", ("1001", "1042"),
                "SCSI miniport"),
    "vioscsi": ("vioscsi", "SCSIAdapter", "{4D36E97B-E325-11CE-BFC1-08002BE10318}", ("1004", "1048"),
                "SCSI miniport"),
    "NetKVM": ("netkvm", "Net", "{4D36E972-E325-11CE-BFC1-08002BE10318}", ("1000", "1041"), "NDIS"),
    "Balloon": ("balloon", "System", "{4D36E97D-E325-11CE-BFC1-08002BE10318}", ("1002", "1045"), ""),
    "vioserial": ("vioser", "System", "{4D36E97D-E325-11CE-BFC1-08002BE10318}", ("1003", "1043"), ""),
}
VIRTIO_OS_DIRS = ("2k8R2", "2k12R2", "2k16", "2k19", "2k22", "w10", "w11")
STATIC_IP = ("192.168.10.5", "255.255.255.0", "192.168.10.1", "192.168.10.2")


def _inf(base: str, cls: str, guid: str, devices: tuple[str, ...], group: str, vendor: str, ven: str,
         decoration: str, start: str) -> str:
    models = "\r\n".join(
        f"%{base}.DeviceDesc% = {base}_inst, PCI\\VEN_{ven}&DEV_{dev}&SUBSYS_0001{ven}&REV_00" for dev in devices)
    group_line = f"LoadOrderGroup = {group}\r\n" if group else ""
    return (
        f";\r\n; {base}.inf (Sterna test fixture: real INF syntax, not a real driver)\r\n;\r\n"
        f"[Version]\r\nSignature=\"$WINDOWS NT$\"\r\nClass={cls}\r\nClassGUID={guid}\r\nProvider=%VENDOR%\r\n"
        f"DriverVer=09/26/2024,100.95.104.26200\r\nCatalogFile={base}.cat\r\nPnpLockdown=1\r\n\r\n"
        f"[DestinationDirs]\r\nDefaultDestDir = 12 ; DIRID_DRIVERS\r\n\r\n"
        f"[SourceDisksNames]\r\n1 = %DiskId1%,,,\"\"\r\n\r\n[SourceDisksFiles]\r\n{base}.sys = 1,,\r\n\r\n"
        f"[Manufacturer]\r\n%VENDOR% = {base}_models,{decoration}\r\n\r\n"
        f"[{base}_models.{decoration}]\r\n{models}\r\n\r\n"
        f"[{base}_inst]\r\nCopyFiles=@{base}.sys\r\n\r\n"
        f"[{base}_inst.Services]\r\nAddService = {base}, %SPSVCINST_ASSOCSERVICE%, {base}_Service_Inst\r\n\r\n"
        f"[{base}_Service_Inst]\r\nDisplayName    = %{base}.SVCDESC%\r\nServiceType    = %SERVICE_KERNEL_DRIVER%\r\n"
        f"StartType      = {start}\r\nErrorControl   = %SERVICE_ERROR_NORMAL%\r\n"
        f"ServiceBinary  = %12%\\{base}.sys\r\n{group_line}\r\n"
        f"[Strings]\r\nSPSVCINST_ASSOCSERVICE = 0x00000002\r\nSERVICE_KERNEL_DRIVER = 1\r\n"
        f"SERVICE_BOOT_START = 0\r\nSERVICE_DEMAND_START = 3\r\nSERVICE_ERROR_NORMAL = 1\r\n"
        f"VENDOR = \"{vendor}\"\r\nDiskId1 = \"{base} Installation Disk\"\r\n"
        f"{base}.DeviceDesc = \"{base} device\"\r\n{base}.SVCDESC = \"{base} service\"\r\n"
    )


def sys_bytes(driver: str, os_dir: str, arch: str) -> bytes:
    return b"MZ" + f" Sterna fixture {driver} {os_dir} {arch} ".encode() + b"\0" * 64


@dataclass
class Sources:
    virtio_win: Path
    cloudbase_init_msi: Path
    aws_drivers: Path


def build_sources(root: Path) -> Sources:
    """The operator's driver and agent sources, as they unpack them."""
    virtio = root / "virtio-win"
    for driver, (base, cls, guid, devices, group) in VIRTIO_DRIVERS.items():
        boot = "%SERVICE_BOOT_START%" if driver in ("viostor", "vioscsi") else "%SERVICE_DEMAND_START%"
        for os_dir in VIRTIO_OS_DIRS:
            for arch, deco in (("amd64", "NTamd64.6.1"), ("x86", "NTx86.6.1")):
                d = virtio / driver / os_dir / arch
                d.mkdir(parents=True, exist_ok=True)
                (d / f"{base}.inf").write_text(_inf(base, cls, guid, devices, group, "Red Hat, Inc.", "1AF4",
                                                    deco, boot), newline="")
                (d / f"{base}.sys").write_bytes(sys_bytes(driver, os_dir, arch))
                (d / f"{base}.cat").write_bytes(b"0\x82 fixture catalog " + base.encode())
    aws = root / "aws"
    for folder, base, cls, guid, devices, group, boot in (
        ("AWSNVMe", "AWSNVMe", "SCSIAdapter", "{4D36E97B-E325-11CE-BFC1-08002BE10318}", ("8061", "0061"),
         "SCSI miniport", "%SERVICE_BOOT_START%"),
        ("ENA", "ena", "Net", "{4D36E972-E325-11CE-BFC1-08002BE10318}", ("EC20", "EC21"), "NDIS",
         "%SERVICE_DEMAND_START%"),
    ):
        d = aws / folder
        d.mkdir(parents=True, exist_ok=True)
        (d / f"{base}.inf").write_text(_inf(base, cls, guid, devices, group, "Amazon Web Services, Inc.", "1D0F",
                                            "NTamd64.6.1", boot), newline="")
        (d / f"{base}.sys").write_bytes(sys_bytes(base, "aws", "amd64"))
        (d / f"{base}.cat").write_bytes(b"0\x82 fixture catalog " + base.encode())
        (d / "install.ps1").write_text("# AWS's installer script; Sterna uses pnputil instead\r\n")
    msi = root / "CloudbaseInitSetup_x64.msi"
    # An OLE compound file signature, as every MSI starts; the rest is not a real installer.
    msi.write_bytes(bytes.fromhex("d0cf11e0a1b11ae1") + b"\0" * 24 + b"Sterna fixture cloudbase-init MSI")
    return Sources(virtio, msi, aws)


def _pe(x86_64: bool) -> bytes:
    """A PE header (``file`` says PE32+/PE32 console), which libguestfs reads for the guest's arch."""
    machine, magic = (0x8664, 0x20B) if x86_64 else (0x14C, 0x10B)
    dos = bytearray(64)
    dos[0:2] = b"MZ"
    struct.pack_into("<I", dos, 0x3C, 64)
    coff = b"PE\0\0" + struct.pack("<HHIIIHH", machine, 0, 0, 0, 0, 0xF0, 0x22)
    opt = bytearray(0xF0)
    struct.pack_into("<H", opt, 0, magic)
    struct.pack_into("<H", opt, 68, 3)
    return bytes(dos) + coff + bytes(opt)


def system_keys() -> dict[str, dict[str, str | int | list[str]]]:
    ip, mask, gw, dns = STATIC_IP
    cs = "ControlSet001"
    return {
        "Select": {"Current": 1, "Default": 1, "LastKnownGood": 1},
        f"{cs}\\Control\\ComputerName\\ComputerName": {"ComputerName": "WINSRV"},
        f"{cs}\\Control\\Session Manager\\Memory Management": {"PagingFiles": ["D:\\pagefile.sys 0 0"]},
        f"{cs}\\Control\\TimeZoneInformation": {"TimeZoneKeyName": "W. Europe Standard Time"},
        f"{cs}\\Services\\VMTools": {"Start": 2, "Type": 16, "ImagePath": "vmtoolsd.exe"},
        f"{cs}\\Services\\vmci": {"Start": 0, "Type": 1},
        f"{cs}\\Services\\pvscsi": {"Start": 0, "Type": 1, "Group": "SCSI miniport"},
        f"{cs}\\Services\\partmgr\\Parameters": {"SanPolicy": 3},
        f"{cs}\\Services\\Tcpip\\Parameters": {"Hostname": "winsrv"},
        f"{cs}\\Services\\Tcpip\\Parameters\\Interfaces\\{{5B1A2C3D-0000-4000-8000-000000000001}}": {
            "EnableDHCP": 0, "IPAddress": [ip], "SubnetMask": [mask], "DefaultGateway": [gw], "NameServer": dns},
    }


def software_keys(name: str) -> dict[str, Mapping[str, str | int | list[str]]]:
    return {
        "Microsoft\\Windows NT\\CurrentVersion": WINDOWS_VERSIONS[name],
        "Microsoft\\Windows\\CurrentVersion": {"DevicePath": "%SystemRoot%\\inf",
                                               "ProgramFilesDir": "C:\\Program Files"},
        "Microsoft\\Windows\\CurrentVersion\\Uninstall\\{9C1C2B28-0E04-4C1C-8C2F-9F4C5A5C8C11}": {
            "DisplayName": "VMware Tools", "Publisher": "VMware, Inc."},
    }


#: an existing local Group Policy startup script (kept; Sterna's entry goes next to it)
EXISTING_SCRIPTS_INI = "\r\n[Startup]\r\n0CmdLine=C:\\ops\\inventory.cmd\r\n0Parameters=\r\n"


def build_images(out: Path, names: list[str], *, existing_gpo: tuple[str, ...] = ()) -> dict[str, Path]:
    """One raw disk per name, built in a single appliance; ``existing_gpo`` guests already have a script."""
    guestfs = load_guestfs()
    out.mkdir(parents=True, exist_ok=True)
    paths = {name: out / f"{name}.raw" for name in names}
    for path in paths.values():
        with path.open("wb") as f:
            f.truncate(IMAGE_BYTES)
    g = guestfs.GuestFS(python_return_dict=True)
    g.set_backend("direct")
    g.set_backend_settings(["force_tcg"])
    with tempfile.TemporaryDirectory(prefix="sterna-winhives-") as tmp:
        try:
            for path in paths.values():
                g.add_drive_opts(str(path), format="raw")
            g.launch()
            for device, name in zip(g.list_devices(), names, strict=True):
                g.part_disk(device, "mbr")
                part = device + "1"
                g.mkfs("ntfs", part)
                g.mount(part, "/")
                for d in ("/Windows/System32/config", "/Windows/System32/drivers", "/Windows/INF",
                          "/Program Files/VMware/VMware Tools"):
                    g.mkdir_p(d)
                g.mkdir_p("/Windows/SysWOW64")
                software = make_hive(Path(tmp) / f"{name}-SOFTWARE", software_keys(name))
                system = make_hive(Path(tmp) / f"{name}-SYSTEM", system_keys())
                g.upload(str(software), "/Windows/System32/config/SOFTWARE")
                g.upload(str(system), "/Windows/System32/config/SYSTEM")
                g.write("/Windows/System32/cmd.exe", _pe(True))
                g.write("/Program Files/VMware/VMware Tools/vmtoolsd.exe", _pe(True))
                if name in existing_gpo:
                    g.mkdir_p("/Windows/System32/GroupPolicy/Machine/Scripts/Startup")
                    g.write("/Windows/System32/GroupPolicy/Machine/Scripts/scripts.ini",
                            b"\xff\xfe" + EXISTING_SCRIPTS_INI.encode("utf-16-le"))
                    g.write("/Windows/System32/GroupPolicy/gpt.ini", b"[General]\r\nVersion=3\r\n")
                g.umount_all()
            g.shutdown()
        finally:
            g.close()
    return paths


def image_key(names: list[str], existing_gpo: tuple[str, ...]) -> str:
    """What the images are made of: the names asked for, and the code that writes them (this module, the
    hive writer, the version table). Any change to those makes a new key, so a stale image is never used."""
    h = hashlib.sha256(json.dumps([names, sorted(existing_gpo), IMAGE_BYTES]).encode())
    for module in (__file__, winhive.__file__, trees.__file__):
        h.update(Path(module).read_bytes())
    return h.hexdigest()[:16]


def cached_images(out: Path, names: list[str], *, existing_gpo: tuple[str, ...] = ()) -> dict[str, Path]:
    """``build_images``'s disks as sparse copies in ``out``, built once into the cache per key.

    The build is an appliance under TCG (about 40 s, on each pytest-xdist worker that needs them); the
    copies are the caller's own, so a test that writes to one leaves the cached images as built.
    """
    cache = cache_root().parent / "windows-images"
    done = cache / image_key(names, existing_gpo)
    with cache_lock(cache / ".lock"):  # xdist workers ask at once: one builds, the others wait for it
        if not done.is_dir():
            partial = cache / f"{done.name}.partial"
            shutil.rmtree(partial, ignore_errors=True)
            build_images(partial, names, existing_gpo=existing_gpo)
            partial.rename(done)
    out.mkdir(parents=True, exist_ok=True)
    paths = {name: out / f"{name}.raw" for name in names}
    for name, path in paths.items():
        subprocess.run(["cp", "--sparse=always", str(done / f"{name}.raw"), str(path)], check=True)
    return paths


@dataclass
class Readback:
    """What a converted disk holds: files by guest path (lower-cased), and its two hives."""

    product: str
    files: dict[str, bytes] = field(default_factory=dict)
    hives: dict[str, Path] = field(default_factory=dict)

    def file(self, path: str) -> bytes | None:
        return self.files.get(path.lower())

    def listing(self, prefix: str) -> list[str]:
        p = prefix.lower().rstrip("/") + "/"
        return sorted(k[len(p):] for k in self.files if k.startswith(p))

    def values(self, hive: str, key: str) -> dict[str, Any] | None:
        """Values of ``key`` in ``hive`` (SYSTEM/SOFTWARE), decoded; ``None`` when the key is absent."""
        from osmorphing.winreg import decode

        hivex = import_system("hivex", "python3-hivex")
        h = hivex.Hivex(str(self.hives[hive]))
        node = h.root()
        for part in key.split("\\"):
            node = h.node_get_child(node, part)
            if not node:
                return None
        out = {}
        for v in h.node_values(node):
            kind, raw = h.value_value(v)
            out[h.value_key(v)] = (kind, decode(kind, raw))
        return out

    def subkeys(self, hive: str, key: str) -> list[str]:
        hivex = import_system("hivex", "python3-hivex")
        h = hivex.Hivex(str(self.hives[hive]))
        node = h.root()
        for part in key.split("\\"):
            node = h.node_get_child(node, part)
            if not node:
                return []
        return [h.node_name(c) for c in h.node_children(node)]


#: what read_back collects (everything under these directories, case-insensitively)
READ_DIRS = ("/Windows/Drivers/Sterna", "/Windows/Sterna", "/Windows/System32/drivers",
             "/Windows/System32/GroupPolicy")


def _system_volume(g: Any, partitions: list[str], device: str) -> str | None:
    """The NTFS partition of ``device`` that holds ``Windows/System32/config``, mounted read-only at /.

    Found by looking, not by libguestfs inspection nor ``list_filesystems`` (which probe LVM, md...):
    those cost seconds per disk under TCG.
    """
    for fs in [p for p in partitions if g.part_to_dev(p) == device] or [device]:
        try:
            if g.vfs_type(fs) != "ntfs":
                continue
        except RuntimeError:  # no filesystem there
            continue
        g.mount_ro(fs, "/")
        try:
            if g.is_dir(g.case_sensitive_path("/Windows/System32/config")):
                return str(fs)
        except RuntimeError:  # case_sensitive_path: no /Windows at all
            pass
        g.umount_all()
    return None


def read_back(disks: dict[str, Path], out: Path, fmt: str = "raw") -> dict[str, Readback]:
    """Open ``disks`` read-only in one appliance and collect what the conversion wrote."""
    guestfs = load_guestfs()
    g = guestfs.GuestFS(python_return_dict=True)
    g.set_backend("direct")
    g.set_backend_settings(["force_tcg"])
    keys = list(disks)
    result: dict[str, Readback] = {}
    try:
        for key in keys:
            g.add_drive_opts(str(disks[key]), format=fmt, readonly=True)
        g.launch()
        partitions = g.list_partitions()
        for device, key in zip(g.list_devices(), keys, strict=True):
            if _system_volume(g, partitions, device) is None:
                raise AssertionError(f"{disks[key]}: no NTFS volume with Windows/System32/config on it")
            rb = Readback(product="")
            for top in READ_DIRS:
                try:
                    real = g.case_sensitive_path(top)
                except RuntimeError:
                    continue
                if not g.is_dir(real):
                    continue
                # One tar of the directory per call: a call per file costs a second under TCG.
                archive = out / f"{key}-read.tar"
                g.tar_out(real, str(archive))
                with tarfile.open(archive) as tar:
                    for member in tar.getmembers():
                        data = tar.extractfile(member) if member.isfile() else None
                        if data is not None:
                            path = posixpath.normpath(f"{real}/{member.name}")
                            rb.files[path.lower()] = data.read()
                archive.unlink()
            for hive in ("SYSTEM", "SOFTWARE"):
                local = out / f"{key}-{hive}"
                g.download(g.case_sensitive_path(f"/Windows/System32/config/{hive}"), str(local))
                rb.hives[hive] = local
            rb.product = str((rb.values("SOFTWARE", "Microsoft\\Windows NT\\CurrentVersion") or {}).get(
                "ProductName", (0, ""))[1])
            result[key] = rb
            g.umount_all()
        g.shutdown()
    finally:
        g.close()
    return result


def main() -> None:
    """Convert an operator's (copy of a) Windows disk for a target and print what the image now holds."""
    from core.settings import get_settings
    from osmorphing import MorphOptions, morph_image
    from osmorphing.winsources import WindowsSources

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("disk")
    parser.add_argument("--format", default="raw")
    parser.add_argument("--target", default="kvm", choices=["kvm", "openstack", "aws", "azure", "gcp"])
    args = parser.parse_args()
    s = get_settings()
    sources = WindowsSources.locate(s.virtio_win, s.cloudbase_init_msi, s.aws_windows_drivers, s.data_dir)
    platform = "kvm" if args.target == "openstack" else args.target
    report = morph_image(args.disk, args.format, target_platform=platform, source_platform="vmware",
                         options=MorphOptions(), on_event=print, windows_sources=sources,
                         windows_target=args.target)
    with tempfile.TemporaryDirectory() as tmp:
        rb = read_back({"disk": Path(args.disk)}, Path(tmp), args.format)["disk"]
        print(f"\nread back: {rb.product}; {len(report.changes)} change(s) made")
        for path in sorted(rb.files):
            print(f"  {path} ({len(rb.files[path])} bytes)")
        cs = "ControlSet001"
        for name in ("viostor", "vioscsi", "AWSNVMe"):
            key = f"{cs}\\Services\\{name}"
            print(f"  HKLM\\SYSTEM\\{key}: {rb.values('SYSTEM', key)}")


if __name__ == "__main__":
    main()
