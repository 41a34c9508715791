"""Windows guests: detection from the offline registry, and the conversion plan.

Detection reads ``HKLM\\SOFTWARE\\Microsoft\\Windows NT\\CurrentVersion`` from the guest's SOFTWARE hive
with hivex, the library libguestfs itself uses. Conversion (virtio drivers, firstboot scripts,
cloudbase-init) is delegated to virt-v2v's in-place converter, ``virt-v2v-in-place``, when it is
installed together with what it needs for Windows (the virtio-win drivers and ``rhsrvany.exe``); see
``windows_conversion_plan``.
"""

from __future__ import annotations

import os
import shutil
import struct
import tempfile
from pathlib import Path
from typing import Any

from osmorphing.guest import Guest, find_case_insensitive
from osmorphing.models import OsInfo
from osmorphing.system import import_system

CURRENT_VERSION_KEY = ("Microsoft", "Windows NT", "CurrentVersion")
#: where virt-v2v looks for the Windows helpers it injects (firstboot service wrapper)
VIRT_TOOLS_DIR = Path("/usr/share/virt-tools")
VIRTIO_WIN_CANDIDATES = (Path("/usr/share/virtio-win"), Path("/usr/share/virtio-win/virtio-win.iso"))


def read_current_version(guest: Guest, hive_path: str) -> dict[str, str | int]:
    """Values of ``...\\Windows NT\\CurrentVersion`` from the SOFTWARE hive at ``hive_path``."""
    # python3-hivex (Debian); read lazily so Linux-only workers need not have it
    hivex = import_system("hivex", "python3-hivex")

    with tempfile.NamedTemporaryFile(prefix="sterna-hive-") as tmp:
        tmp.write(guest.read_bytes(hive_path))
        tmp.flush()
        h = hivex.Hivex(tmp.name)
        node = h.root()
        for part in CURRENT_VERSION_KEY:
            node = h.node_get_child(node, part)
            if not node:
                return {}
        values: dict[str, str | int] = {}
        for value in h.node_values(node):
            kind, raw = h.value_value(value)
            name = h.value_key(value)
            if kind in (1, 2):  # REG_SZ, REG_EXPAND_SZ
                values[name] = raw.decode("utf-16-le", errors="replace").rstrip("\0")
            elif kind == 4 and len(raw) >= 4:  # REG_DWORD
                values[name] = struct.unpack("<I", raw[:4])[0]
        return values


def inspect_windows(guest: Guest, hints: dict[str, Any]) -> OsInfo:
    """Version, edition and build of a Windows guest."""
    hive = find_case_insensitive(guest, "/Windows/System32/config/SOFTWARE")
    values = read_current_version(guest, hive) if hive else {}
    build = str(values.get("CurrentBuildNumber") or values.get("CurrentBuild") or "")
    major = values.get("CurrentMajorVersionNumber")
    minor = values.get("CurrentMinorVersionNumber", 0)
    version = f"{major}.{minor}" if major is not None else str(values.get("CurrentVersion") or "")
    if not version and hints.get("major_version") is not None:
        version = f"{hints['major_version']}.{hints.get('minor_version', 0)}"
    product = str(values.get("ProductName") or hints.get("product_name") or "")
    installation = str(values.get("InstallationType") or hints.get("product_variant") or "")
    friendly = product
    # Windows 11 still writes "Windows 10 ..." as ProductName; the build number tells them apart.
    if (
        product.startswith("Windows 10")
        and build.isdigit()
        and int(build) >= 22000
        and installation != "Server"
    ):
        friendly = "Windows 11" + product[len("Windows 10") :]
    arch = hints.get("arch") or ("x86_64" if find_case_insensitive(guest, "/Windows/SysWOW64") else "i386")
    return OsInfo(
        os_type="windows",
        family="windows",
        distribution="windows",
        version=version,
        friendly_name=friendly,
        architecture=arch,
        firmware=hints.get("firmware") or "unknown",
        root_filesystem=hints.get("root"),
        bootloader="windows-bootmgr",
        windows_edition=str(values.get("EditionID") or "") or None,
        windows_product_name=product or None,
        windows_build=build or None,
        windows_installation_type=installation or None,
    )


def windows_conversion_plan(info: OsInfo, target_platform: str) -> dict[str, Any]:
    """What converting this Windows guest needs, and whether this host can do it.

    The plan is: ``virt-v2v-in-place`` on the disk (it injects the virtio-win drivers matching the
    version, installs firstboot scripts through the ``rhsrvany`` service wrapper, and removes VMware
    Tools at first boot), then cloudbase-init as the target's metadata agent. Returns the steps and,
    under ``missing``, each prerequisite absent from this host.
    """
    missing = []
    converter = shutil.which("virt-v2v-in-place")
    if not converter:
        missing.append("virt-v2v-in-place (virt-v2v's in-place converter) is not installed")
    if not any((VIRT_TOOLS_DIR / name).exists() for name in ("rhsrvany.exe", "pvvxsvc.exe")):
        missing.append(f"rhsrvany.exe or pvvxsvc.exe in {VIRT_TOOLS_DIR} (firstboot service wrapper)")
    virtio = os.environ.get("VIRTIO_WIN") or next((str(p) for p in VIRTIO_WIN_CANDIDATES if p.exists()), None)
    if target_platform in ("kvm", "gcp") and not virtio:
        missing.append("virtio-win drivers (directory or ISO; set VIRTIO_WIN) are not present")
    steps = [
        f"virt-v2v-in-place -i disk <disk> (target {target_platform}): inject virtio drivers "
        "(viostor, vioscsi, netkvm, balloon) for "
        f"{info.windows_product_name or 'Windows'} {info.windows_build or ''}".strip(),
        "firstboot: remove VMware Tools / Hyper-V integration leftovers",
        "firstboot: install cloudbase-init with the target's metadata service",
    ]
    return {"converter": converter, "virtio_win": virtio, "steps": steps, "missing": missing}
