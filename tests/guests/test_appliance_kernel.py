"""The libguestfs appliance boots the host's kernel unpacked (``devstack/appliance.py``).

Every appliance launch of the suite (morphs, GRUB installs, read-backs) uses it, so those tests prove
that the unpacked kernel boots; these check the unpacking and that the suite runs with it.
"""

from __future__ import annotations

import gzip
import lzma
import os
import shutil
from pathlib import Path

from devstack.appliance import has_pvh_entry, host_kernel, unpack_vmlinux
from devstack.guest import cache_root


def test_the_host_kernel_unpacks_to_an_elf_with_a_pvh_entry_and_the_suite_boots_that() -> None:
    found = host_kernel()
    assert found is not None, "no /boot/vmlinuz-* with its modules: run make sysdeps (linux-image-amd64)"
    bzimage, version = found
    elf = unpack_vmlinux(bzimage.read_bytes())
    assert elf is not None and elf.startswith(b"\x7fELF") and has_pvh_entry(elf)
    # tests/conftest.py put it in the environment every appliance of this run inherits
    assert os.environ["SUPERMIN_KERNEL_VERSION"] == version
    assert Path(os.environ["SUPERMIN_KERNEL"]).read_bytes() == elf
    assert Path(os.environ["LIBGUESTFS_CACHEDIR"]).is_relative_to(cache_root().parent)


def test_a_gzip_packed_kernel_unpacks_and_an_elf_without_a_pvh_entry_is_refused(tmp_path: Path) -> None:
    found = host_kernel()
    assert found is not None
    elf = Path(os.environ["SUPERMIN_KERNEL"]).read_bytes()
    # a bzImage's set-up code, then the payload, then its trailer: only the payload is the kernel
    assert unpack_vmlinux(b"\x90" * 4096 + gzip.compress(elf, 1) + b"\x1f\x8b\x08tail") == elf

    true = Path(shutil.which("true") or "/bin/true").read_bytes()  # an ELF with notes, none of them Xen's
    assert true.startswith(b"\x7fELF") and not has_pvh_entry(true)
    assert unpack_vmlinux(b"\x90" * 512 + lzma.compress(true, format=lzma.FORMAT_XZ)) is None
    assert unpack_vmlinux(b"no kernel here") is None
