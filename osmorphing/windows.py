"""Windows guests: detection from the offline registry, and the conversion plan.

Detection reads ``HKLM\\SOFTWARE\\Microsoft\\Windows NT\\CurrentVersion`` from the guest's SOFTWARE hive
with hivex, the library libguestfs itself uses. Conversion is ``osmorphing.winconvert``.
"""

from __future__ import annotations

import struct
import tempfile
from typing import Any

from osmorphing.guest import Guest, find_case_insensitive
from osmorphing.models import OsInfo
from osmorphing.system import import_system

CURRENT_VERSION_KEY = ("Microsoft", "Windows NT", "CurrentVersion")


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
