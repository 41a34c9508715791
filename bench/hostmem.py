"""Hold back the guest's free page reporting for the length of a bench run.

On the Firecracker guests this bench has run on, virtio-balloon's free page reporting hands the
pages the guest frees back to the host at once (``min_free_ms=0``; a pass starts as soon as 1 GiB
waits, ``max_waiting_mib=1024``). The next writer that is given such pages pays a host page fault
per 4 KiB page inside its copy into the page cache, about 9 µs: 1 GiB written took 1.7-2.6 s
instead of 0.25 (``qemu-img convert -O raw``, 3 runs in 6; 78 % of the samples in
``copy_folio_from_iter_atomic``), counted as the guest's system time, not as steal. Which writer
pays is chance: every output the bench deletes frees a GiB. With reporting held back for the run,
the same sequence took 0.23-0.26 s in 8 runs of 8.

Holding back does not bring back what the host took before the run: the first writers of the
first round still touch such pages (the rounds' first floor took 3.4 CPU-s, 82 % in that copy, and
nginx's zero pages for the whole file's holes made the whole-file curl 4.4 s instead of 1.4).
``bench.run`` discards a first round for that.

The knobs are this kernel's (``/sys/module/page_reporting/parameters``): where they are absent or
read-only, nothing is changed and the report says so. They are restored when the run ends; a run
killed before that leaves the hold in place (harmless: freed memory goes back to the host 5 minutes
late), and the values to write back are the ones its report would have printed: 0 and 1024 here.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path

KNOBS = Path("/sys/module/page_reporting/parameters")
#: a page is reported only after 5 minutes free (the most this kernel takes: 600000 is refused),
#: longer than a bench run of 7 rounds; and no pass starts early for the amount waiting
HOLD = {"min_free_ms": "300000", "max_waiting_mib": "1048576"}


def _reported_kib() -> int | None:
    try:
        return int((KNOBS / "reported_kib").read_text())
    except (OSError, ValueError):
        return None


@contextlib.contextmanager
def hold_reporting(info: dict[str, str]) -> Iterator[Callable[[], None]]:
    """Defer free page reporting until the block ends; ``info["page reporting"]`` says what was done.

    Yields a function that adds to that entry how much was reported since the block began (none,
    when the hold worked): call it before ``info`` is rendered.
    """
    saved: dict[str, str] = {}
    try:
        for name, value in HOLD.items():
            saved[name] = (KNOBS / name).read_text().strip()
            (KNOBS / name).write_text(value)
        was = ", ".join(f"{k}={v}" for k, v in saved.items())
        info["page reporting"] = f"held back during the run (was {was}, restored after it)"
    except OSError as exc:
        for name, value in saved.items():
            (KNOBS / name).write_text(value)
        saved = {}
        info["page reporting"] = f"left as it is ({exc.strerror or exc})"
    before = _reported_kib()

    def tally() -> None:
        now = _reported_kib()
        if before is not None and now is not None:
            info["page reporting"] += f"; {(now - before) // 1024} MiB reported during it"

    try:
        yield tally
    finally:
        for name, value in saved.items():
            (KNOBS / name).write_text(value)
