"""A guest build killed mid-way (debootstrap's ``/proc`` still mounted in its folder) is cleaned up by
the next build, and a build under way is left alone (``devstack.guest._start_build``)."""

from __future__ import annotations

import fcntl
import subprocess
from pathlib import Path

from devstack.guest import _start_build


def _mounted(point: Path) -> bool:
    return any(line.split()[1] == str(point) for line in Path("/proc/self/mounts").read_text().splitlines())


def test_an_abandoned_build_is_unmounted_and_removed_and_a_live_one_kept(tmp_path: Path) -> None:
    dead = tmp_path / "build-dead"
    (dead / "root" / "proc").mkdir(parents=True)
    (dead / ".owner").touch()
    subprocess.run(["mount", "-t", "tmpfs", "tmpfs", str(dead / "root" / "proc")], check=True)
    live = tmp_path / "build-live"
    live.mkdir()
    try:
        with (live / ".owner").open("w") as owner:
            fcntl.flock(owner, fcntl.LOCK_EX)  # as the build that made it holds it
            work, mine = _start_build(tmp_path)
            mine.close()
            assert live.is_dir() and work.is_dir()
        assert not _mounted(dead / "root" / "proc") and not dead.exists()
    finally:
        subprocess.run(["umount", "-l", str(dead / "root" / "proc")], capture_output=True, check=False)
