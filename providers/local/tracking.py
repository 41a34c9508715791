"""Change tracking of qcow2 source disks: one persistent dirty bitmap per transfer, rotated at each snapshot.

At each snapshot a new bitmap ``sterna-<tag>-<n>`` is added to the source *before* the copy, so
that every write after it is tracked (a write between the two lands in both: an over-approximation,
never a loss). The copy then holds the earlier bitmaps too: the one a replica last synced from says
what changed since. Older bitmaps are removed from the source after the copy, so that at most one
per transfer costs the guest's writes.

qemu-img needs the image unlocked: a disk a running qemu holds open gets no marker and the transfer
falls back to digest comparison.
"""

from __future__ import annotations

import logging
import subprocess
import time
from pathlib import Path

from diskio import bitmaps

log = logging.getLogger(__name__)


def _ours(names: list[str], tag: str) -> list[str]:
    prefix = f"sterna-{tag}-"
    return sorted((n for n in names if n.startswith(prefix) and n[len(prefix):].isdigit()),
                  key=lambda n: int(n[len(prefix):]))


def start(source: Path, tag: str) -> None:
    """Before the copy: a fresh bitmap on the source."""
    try:
        bitmaps.add_bitmap(source, f"sterna-{tag}-{time.time_ns()}")
    except subprocess.CalledProcessError as err:
        log.warning("no change tracking for %s: %s", source, err.stderr.strip() if err.stderr else err)


def finish(source: Path, copy: Path, tag: str) -> str | None:
    """After the copy: the marker of this snapshot (the newest bitmap in the copy); older ones leave the source."""
    mine = _ours(bitmaps.bitmaps(copy), tag)
    if not mine:
        return None
    marker = mine[-1]
    try:
        for old in _ours(bitmaps.bitmaps(source), tag):
            if old != marker:
                bitmaps.remove_bitmap(source, old)
    except subprocess.CalledProcessError as err:
        log.warning("could not remove old bitmaps of %s: %s", source, err.stderr.strip() if err.stderr else err)
    return marker


def release(source: Path, tag: str) -> list[str]:
    """Remove every bitmap of this transfer from the source (its replica is gone)."""
    removed = []
    for name in _ours(bitmaps.bitmaps(source), tag):
        bitmaps.remove_bitmap(source, name)
        removed.append(f"Removed dirty bitmap {name} from {source}")
    return removed
