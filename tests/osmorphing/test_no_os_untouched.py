"""A disk with no OS to adapt leaves OS morphing byte for byte as it came.

The demo's sample disk (``devstack.sample``) is an ext4 root with an ``/etc/os-release`` and data but no
kernel: libguestfs finds a root on it, and the morph refuses it as no OS to adapt. It must refuse it
*before* mounting anything read-write, since a read-write mount alone rewrites the ext4 superblock.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from devstack.sample import build_disk
from osmorphing import InspectionError, MorphOptions
from osmorphing.image import morph_image


def _digest(path: Path) -> str:
    return hashlib.file_digest(path.open("rb"), "sha256").hexdigest()


def test_a_disk_with_no_os_to_adapt_is_refused_unchanged(tmp_path: Path) -> None:
    disk = tmp_path / "sample.raw"
    build_disk(disk, size=256 * 1024**2, data_mib=1)
    before = _digest(disk)
    events: list[str] = []
    with pytest.raises(InspectionError, match="not a bootable OS"):
        morph_image(str(disk), "raw", target_platform="kvm", source_platform=None, options=MorphOptions(),
                    on_event=events.append)
    assert _digest(disk) == before, events
