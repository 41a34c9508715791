"""Persistent dirty bitmaps of qcow2 images: the local source's change tracking.

A bitmap added with ``qemu-img bitmap --add`` lives in the image and records every later write
made through qemu (a VM, ``qemu-io``, ``qemu-nbd``). Its dirty map is read as NBD block status
of the ``qemu:dirty-bitmap:NAME`` meta context: ``qemu-nbd --bitmap`` serves it and libnbd's
``nbdinfo --map`` reads it.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from core.children import die_with_parent
from diskio.base import Extent
from diskio.qemu import qemu_img_info


def _run(args: list[str]) -> str:
    return subprocess.run(args, check=True, capture_output=True, text=True, preexec_fn=die_with_parent).stdout


def bitmaps(path: str | Path) -> list[str]:
    """Names of the persistent bitmaps of a qcow2 image, usable ones only (not ``in-use``)."""
    info = qemu_img_info(path, "qcow2")
    specific = info.get("format-specific")
    data = specific.get("data", {}) if isinstance(specific, dict) else {}
    return [b["name"] for b in data.get("bitmaps", []) if "in-use" not in b.get("flags", [])]


def add_bitmap(path: str | Path, name: str) -> None:
    _run(["qemu-img", "bitmap", "--add", "-f", "qcow2", str(path), name])


def remove_bitmap(path: str | Path, name: str) -> None:
    _run(["qemu-img", "bitmap", "--remove", "-f", "qcow2", str(path), name])


def dirty_extents(path: str | Path, name: str) -> list[Extent]:
    """The areas bitmap ``name`` of a qcow2 image marks dirty, merged and sorted.

    ``nbdinfo`` starts the ``qemu-nbd`` itself (systemd socket activation) and it exits with it.
    """
    out = _run(["nbdinfo", f"--map=qemu:dirty-bitmap:{name}", "--json", "--",
                "[", "qemu-nbd", "--read-only", "--format", "qcow2", "--bitmap", name, str(path), "]"])
    extents: list[Extent] = []
    for entry in json.loads(out):
        if int(entry["type"]) & 1:  # bit 0: dirty
            start, length = int(entry["offset"]), int(entry["length"])
            if extents and extents[-1].end == start:
                extents[-1] = Extent(extents[-1].offset, extents[-1].length + length)
            else:
                extents.append(Extent(start, length))
    return extents
