"""Where a disk copy resumes: its checkpoint file in scratch, reconciled with the last heartbeat.

The file (``diskio.checkpoint``) keeps up with the chunks; heartbeat details reach the server at
most once per 0.8 x the heartbeat timeout, so they are usually behind it, but they can be ahead when
the file could not be written (or when the previous attempt predates the file). A retry takes the
union of what both claim, where each claim still holds.
"""

from __future__ import annotations

from pathlib import Path

from diskio.checkpoint import CheckpointFile, boot_id
from diskio.ranges import Range, merge
from workflows.types import Heartbeat


def checkpoint_file(folder: Path, name: str, key: str) -> CheckpointFile:
    """``<folder>/<name>.checkpoint``, for the work that ``key`` names."""
    folder.mkdir(parents=True, exist_ok=True)
    return CheckpointFile(folder / f"{name}.checkpoint", key)


def resume_ranges(file: CheckpointFile, beat: Heartbeat | None, target: Path | None = None) -> list[Range]:
    """Done ranges a retry may skip: the file's claims, plus the heartbeat's where they still hold.

    ``target``: a local file the ranges describe; when it is gone (a wiped scratch), nothing holds and
    the file goes too. A heartbeat's ranges were written, not synced: they hold on the boot that wrote
    them (``Heartbeat.boot``); a heartbeat from before boots were recorded holds unless the file was
    last written on another boot.
    """
    if target is not None and not target.exists():
        file.remove()
        return []
    saved = file.load()
    claims = list(saved.ranges) if saved else []
    if beat is not None and beat.checkpoint:
        holds = beat.boot == boot_id() if beat.boot else (saved is None or saved.same_boot)
        if holds:
            claims += [(int(a), int(b)) for a, b in beat.checkpoint]
    return merge(claims)
