"""Where a retried copy resumes: its checkpoint file and its last heartbeat, each where it still holds."""

from __future__ import annotations

import json
from pathlib import Path

from activities.checkpoints import checkpoint_file, resume_ranges
from diskio.checkpoint import boot_id
from workflows.types import Heartbeat


def _target(tmp_path: Path) -> Path:
    path = tmp_path / "disk-0.raw"
    path.write_bytes(b"x")
    return path


def test_the_furthest_of_file_and_heartbeat_wins(tmp_path: Path) -> None:
    target = _target(tmp_path)
    file = checkpoint_file(tmp_path, target.name, "work")
    file.save([(0, 100)], [(0, 300)], durable=False)
    behind = Heartbeat(bytes_done=50, bytes_total=1000, checkpoint=[(0, 50)], boot=boot_id())
    assert resume_ranges(file, behind, target) == [(0, 300)]
    ahead = Heartbeat(bytes_done=400, bytes_total=1000, checkpoint=[(0, 400)], boot=boot_id())
    assert resume_ranges(file, ahead, target) == [(0, 400)]
    # An attempt from before checkpoint files: its heartbeat alone, as before.
    file.remove()
    assert resume_ranges(file, ahead, target) == [(0, 400)]


def test_claims_written_on_another_boot_do_not_hold(tmp_path: Path) -> None:
    target = _target(tmp_path)
    file = checkpoint_file(tmp_path, target.name, "work")
    file.save([(0, 100)], [(0, 300)], durable=True)
    file.path.write_text(json.dumps({**json.loads(file.path.read_text()), "boot": "before-the-reboot"}))
    stale = Heartbeat(bytes_done=400, bytes_total=1000, checkpoint=[(0, 400)], boot="before-the-reboot")
    assert resume_ranges(file, stale, target) == [(0, 100)]  # only what was synced
    # A heartbeat that names no boot holds unless the file says a reboot came in between.
    unnamed = Heartbeat(bytes_done=400, bytes_total=1000, checkpoint=[(0, 400)])
    assert resume_ranges(file, unnamed, target) == [(0, 100)]


def test_a_missing_target_resumes_nothing_and_drops_the_file(tmp_path: Path) -> None:
    file = checkpoint_file(tmp_path, "disk-0.raw", "work")
    file.save([(0, 100)], [], durable=True)
    beat = Heartbeat(bytes_done=100, bytes_total=1000, checkpoint=[(0, 100)], boot=boot_id())
    assert resume_ranges(file, beat, tmp_path / "disk-0.raw") == []
    assert not file.path.exists()
