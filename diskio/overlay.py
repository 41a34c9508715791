"""What a qcow2 overlay changed over its backing file, in whole blocks of a destination.

``qemu-img map`` says which areas the overlay's own layer holds (depth 0: written, or zeroed,
there); everything else reads through from the backing file. A block counts as changed when the
overlay holds part of it and its bytes differ from the backing file's: OS morphing also rewrites
files with what they held, and those blocks need not move.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from diskio.base import DiskSource, Extent
from diskio.plan import align_extents
from diskio.qemu import add_extent


def own_extents(overlay: str | Path) -> list[Extent]:
    """Areas the top layer of a qcow2 image holds itself, data or zeros (none of its backing chain)."""
    out = subprocess.run(["qemu-img", "map", "--output=json", "-f", "qcow2", str(overlay)],
                         check=True, capture_output=True, text=True).stdout
    extents: list[Extent] = []
    for entry in json.loads(out):
        if entry.get("depth", 0) != 0 or not entry.get("present", True):
            continue
        add_extent(extents, int(entry["start"]), int(entry["length"]))
    return extents


def changed_blocks(view: DiskSource, base: DiskSource, touched: list[Extent], block: int) -> list[Extent]:
    """The ``block``-sized, ``block``-aligned areas within ``touched`` where ``view`` reads unlike ``base``."""
    changed: list[Extent] = []
    for off, length in align_extents(touched, view.size, block):
        for start in range(off, off + length, block):
            n = min(block, view.size - start)
            if view.read(start, n) == base.read(start, n):
                continue
            if changed and changed[-1].end == start:
                changed[-1] = Extent(changed[-1].offset, changed[-1].length + n)
            else:
                changed.append(Extent(start, n))
    return changed
