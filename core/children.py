"""Child processes (qemu-nbd, qemu-img, cp) die with the worker that started them.

Two mechanisms, because neither is enough alone:

* ``die_with_parent`` (a ``preexec_fn``) asks the kernel for SIGKILL when the parent goes away
  (``PR_SET_PDEATHSIG``). The kernel means the parent *thread*: children are started from the
  event loop or from the long-lived executor threads, which live as long as the worker.
* ``mark_children`` tags every child (through the inherited environment) with its worker's pid and
  start time, so that ``sweep`` at the next worker start kills what a previous worker left, e.g. a
  child forked while the kernel option was not yet set.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import signal
from pathlib import Path

OWNER_VAR = "STERNA_CHILD_OF"
_PR_SET_PDEATHSIG = 1
_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)


def die_with_parent() -> None:
    """``preexec_fn``: SIGKILL this child when its parent dies; exit now if it already has."""
    _libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() == 1:
        os._exit(1)


def _start_time(pid: int) -> str | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may hold spaces; fields after it are split on the last ')'.
    return stat.rsplit(")", 1)[1].split()[19]


def _marker(scope: str, pid: int, start: str) -> str:
    return f"{scope}|{pid}|{start}"


def mark_children(scope: Path) -> None:
    """Tag the children this process starts from now on as belonging to it, for ``scope`` (the scratch dir)."""
    os.environ[OWNER_VAR] = _marker(str(scope), os.getpid(), _start_time(os.getpid()) or "")


def _owner(pid: int) -> str | None:
    try:
        environ = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return None
    prefix = OWNER_VAR.encode() + b"="
    for entry in environ.split(b"\0"):
        if entry.startswith(prefix):
            return entry[len(prefix):].decode(errors="replace")
    return None


def sweep(scope: Path) -> list[int]:
    """Kill the children of dead workers of ``scope``; returns their pids."""
    killed = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        marker = _owner(int(entry.name))
        if marker is None:
            continue
        owner_scope, _, rest = marker.partition("|")
        owner_pid, _, owner_start = rest.partition("|")
        if owner_scope != str(scope) or not owner_pid.isdigit():
            continue
        if _start_time(int(owner_pid)) == owner_start:
            continue  # its worker is alive (same pid, same start time): not ours to touch
        with contextlib.suppress(ProcessLookupError):
            os.kill(int(entry.name), signal.SIGKILL)
            killed.append(int(entry.name))
    return killed


def kill_children_using(path: Path) -> list[int]:
    """Kill this process's own children whose command line names ``path`` (or a file under it).

    A cancelled step's provider call keeps running in its thread, and so does the ``cp`` it
    started; this ends the child, so that the thread returns and the step can clean up.
    """
    me, exact = os.getpid(), str(path).encode()
    under = exact.rstrip(b"/") + b"/"
    killed = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) != me:
            continue
        # whole arguments: /scratch/m/vm-a must not match a sibling's /scratch/m/vm-ab
        if not any(arg == exact or arg.startswith(under) for arg in cmdline.split(b"\0")):
            continue
        with contextlib.suppress(ProcessLookupError):
            os.kill(int(entry.name), signal.SIGKILL)
            killed.append(int(entry.name))
    return killed
