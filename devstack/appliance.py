"""An uncompressed kernel for the libguestfs appliance, for hosts that run it under TCG.

Every appliance launch boots the host's kernel. Debian's is an XZ-compressed bzImage, and under TCG
its decompressor alone takes about 4 s of the launch's 17-19 CPU-s (measured 2026-12-06 on the 2-core
AMD EPYC test machine, ``LIBGUESTFS_DEBUG=1`` timestamps). QEMU boots an ELF ``vmlinux`` that carries
a PVH entry note directly, with nothing to decompress: 15.4 against 18.5 CPU-s per launch and inspection
(medians of 5). The kernel and its modules are the same; only the packing differs.

``tcg_appliance_env`` extracts that ``vmlinux`` once per host kernel and returns the environment that
makes supermin build the appliance with it (``SUPERMIN_KERNEL`` and friends), in a libguestfs cache
folder of its own: supermin's up-to-date check does not look at the kernel it was told to use. When the
kernel cannot be read or unpacked, or lacks the PVH note, it returns nothing and libguestfs keeps its
default.
"""

from __future__ import annotations

import hashlib
import lzma
import re
import struct
import zlib
from pathlib import Path

#: compressed payloads a bzImage may carry: (magic, codec)
_CODECS = ((b"\xfd7zXZ\x00", "xz"), (b"\x1f\x8b\x08", "gzip"))
#: XEN_ELFNOTE_PHYS32_ENTRY: the PVH entry point QEMU's direct boot of an ELF kernel needs
_PVH_NOTE = 18
_PT_NOTE = 4


def host_kernel(boot: Path = Path("/boot"), modules: Path = Path("/lib/modules")) -> tuple[Path, str] | None:
    """The newest ``vmlinuz-<version>`` with its modules installed: the kernel supermin would pick."""
    def version_key(version: str) -> list[int | str]:
        return [int(p) if p.isdigit() else p for p in re.split(r"(\d+)", version)]

    found = [(k, k.name.removeprefix("vmlinuz-")) for k in boot.glob("vmlinuz-*")]
    found = [(k, v) for k, v in found if (modules / v).is_dir()]
    return max(found, key=lambda kv: version_key(kv[1])) if found else None


def unpack_vmlinux(bzimage: bytes) -> bytes | None:
    """The ELF kernel inside ``bzimage`` if it has a PVH entry, else ``None``."""
    for magic, codec in _CODECS:
        start = bzimage.find(magic)
        while start >= 0:
            try:
                if codec == "xz":
                    elf = lzma.LZMADecompressor(format=lzma.FORMAT_XZ).decompress(bzimage[start:])
                else:
                    elf = zlib.decompressobj(wbits=31).decompress(bzimage[start:])  # stops at its end
            except (lzma.LZMAError, zlib.error):
                elf = b""
            if elf.startswith(b"\x7fELF") and has_pvh_entry(elf):
                return elf
            start = bzimage.find(magic, start + 1)
    return None


def has_pvh_entry(elf: bytes) -> bool:
    """Whether a 64-bit little-endian ELF image carries a ``Xen`` note of type PHYS32_ENTRY."""
    if elf[4:6] != b"\x02\x01":  # ELFCLASS64, little-endian
        return False
    phoff, = struct.unpack_from("<Q", elf, 0x20)
    phentsize, phnum = struct.unpack_from("<HH", elf, 0x36)
    for i in range(phnum):
        p_type, _flags, p_offset, _vaddr, _paddr, p_filesz = struct.unpack_from("<IIQQQQ", elf, phoff + i * phentsize)
        if p_type != _PT_NOTE:
            continue
        pos, end = p_offset, p_offset + p_filesz
        while pos + 12 <= end:
            namesz, descsz, n_type = struct.unpack_from("<III", elf, pos)
            name = elf[pos + 12:pos + 12 + namesz].rstrip(b"\0")
            if name == b"Xen" and n_type == _PVH_NOTE:
                return True
            pos += 12 + (namesz + 3) // 4 * 4 + (descsz + 3) // 4 * 4
    return False


def tcg_appliance_env(cache: Path) -> dict[str, str]:
    """``SUPERMIN_KERNEL``, ``SUPERMIN_KERNEL_VERSION``, ``SUPERMIN_MODULES`` and ``LIBGUESTFS_CACHEDIR``
    for an appliance that boots the host kernel uncompressed; empty when that is not possible.

    ``cache`` keeps the kernel and the appliance, keyed by the host kernel's content. The caller holds
    a lock if several processes may call this at once.
    """
    found = host_kernel()
    if found is None:
        return {}
    bzimage_path, version = found
    try:
        bzimage = bzimage_path.read_bytes()  # Debian installs it readable by root alone
    except OSError:
        return {}
    folder = cache / f"appliance-kernel-{version}-{hashlib.sha256(bzimage).hexdigest()[:12]}"
    vmlinux = folder / "vmlinux"
    if not vmlinux.is_file():
        elf = unpack_vmlinux(bzimage)
        if elf is None:
            return {}
        folder.mkdir(parents=True, exist_ok=True)
        partial = folder / "vmlinux.partial"
        partial.write_bytes(elf)
        partial.rename(vmlinux)
    return {"SUPERMIN_KERNEL": str(vmlinux), "SUPERMIN_KERNEL_VERSION": version,
            "SUPERMIN_MODULES": f"/lib/modules/{version}", "LIBGUESTFS_CACHEDIR": str(folder / "libguestfs")}
