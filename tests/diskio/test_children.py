"""Reproducer 4 of issue 11: qemu-nbd (and anything else a worker starts) must not outlive the worker.

A real "worker" process is started and SIGKILLed here, as the fault-injection runs did.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from core.children import kill_children_using, sweep


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _wait_gone(pid: int, timeout: float = 10) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not _alive(pid):
            return True
        time.sleep(0.05)
    return False


def _fake_worker(scope: Path, body: str) -> tuple[subprocess.Popen[str], int]:
    """A Python process that marks its children for ``scope``, runs ``body`` and prints a child pid."""
    code = f"from pathlib import Path\nfrom core.children import mark_children\nmark_children(Path({str(scope)!r}))\n"
    proc = subprocess.Popen([sys.executable, "-c", code + body], stdout=subprocess.PIPE, text=True,
                            cwd=Path(__file__).resolve().parents[2])
    assert proc.stdout is not None
    return proc, int(proc.stdout.readline())


def test_qemu_nbd_dies_with_a_killed_worker(tmp_path: Path) -> None:
    image = tmp_path / "disk.raw"
    image.write_bytes(b"\0" * 1024 * 1024)
    worker, nbd = _fake_worker(tmp_path, (
        "import time\nfrom diskio.qemu import QemuNbdServer\n"
        f"server = QemuNbdServer({str(image)!r}, 'raw', read_only=True)\n"
        "print(server._proc.pid, flush=True)\ntime.sleep(300)\n"))
    try:
        assert _alive(nbd)
        worker.send_signal(signal.SIGKILL)
        worker.wait()
        assert _wait_gone(nbd), "qemu-nbd outlived its worker"
    finally:
        if _alive(nbd):
            os.kill(nbd, signal.SIGKILL)


def test_sweep_kills_what_a_dead_worker_left_and_nothing_else(tmp_path: Path) -> None:
    # A child started without the kernel's parent-death signal (a guestfs appliance, an older worker...).
    start = "import subprocess, time\np = subprocess.Popen(['sleep', '300'])\nprint(p.pid, flush=True)\n"
    dead, orphan = _fake_worker(tmp_path / "scratch", start + "time.sleep(300)\n")
    live, kept = _fake_worker(tmp_path / "scratch", start + "time.sleep(300)\n")
    other, foreign = _fake_worker(tmp_path / "elsewhere", start + "time.sleep(300)\n")
    try:
        dead.send_signal(signal.SIGKILL)
        dead.wait()
        assert _alive(orphan)
        assert sweep(tmp_path / "scratch") == [orphan]
        assert _wait_gone(orphan)
        assert _alive(kept) and _alive(foreign)
    finally:
        for proc, child in ((live, kept), (other, foreign)):
            proc.kill()
            proc.wait()
            os.kill(child, signal.SIGKILL)


def test_a_cancelled_step_kills_only_its_own_children_writing_into_its_folder(tmp_path: Path) -> None:
    # Reproducer 6: a cancelled snapshot's cp ran on to the end in its thread.
    mine, sibling = tmp_path / "m" / "vm-a", tmp_path / "m" / "vm-ab"
    for folder in (mine, sibling):
        folder.mkdir(parents=True)
        (folder / "x.partial").touch()
    # ``tail -f`` names a file under the folder in its arguments, as ``cp src <folder>/x.partial`` does.
    ours = subprocess.Popen(["tail", "-f", str(mine / "x.partial")], stderr=subprocess.DEVNULL)
    theirs = subprocess.Popen(["tail", "-f", str(sibling / "x.partial")], stderr=subprocess.DEVNULL)
    try:
        for proc in (ours, theirs):  # a just-spawned child shows its command line once exec is done
            deadline = time.monotonic() + 10
            while not Path(f"/proc/{proc.pid}/cmdline").read_bytes() and time.monotonic() < deadline:
                time.sleep(0.01)
        assert kill_children_using(mine) == [ours.pid]
        assert ours.wait(10) == -signal.SIGKILL
        assert theirs.poll() is None, "a sibling instance's child was killed"
    finally:
        for proc in (ours, theirs):
            proc.kill()
            proc.wait()
