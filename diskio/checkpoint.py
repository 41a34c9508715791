"""Resume points that survive a killed worker: a small file beside the work, replaced atomically.

Temporal's SDK sends heartbeat details at most once per 0.8 x the heartbeat timeout (24 s at the
default 30 s), so after a kill the server holds an old point. This file keeps up with the chunks.
It holds two claims of done ``(offset, length)`` ranges:

- ``synced``: ranges whose bytes the target made durable (``DiskTarget.sync``) *before* the file,
  itself fsynced, named them. They hold after any crash.
- ``written``: ranges whose writes had returned when the file was replaced (rename, no fsync),
  stored only for targets whose completed writes outlive the writing process
  (``DiskTarget.writes_survive_exit``: the page cache, a remote API). They hold only on the same
  boot: a killed worker's page cache is still there, a rebooted host's is not.

``key`` names the work the ranges describe (snapshot, disk, target); a file for other work, or
one that cannot be read, claims nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import threading
import time
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from diskio.base import DiskTarget
from diskio.ranges import Range, merge

#: the durable claim is renewed at most this often: each renewal syncs the target (fdatasync, NBD
#: flush), which costs a journal commit; the same-boot claim follows every chunk in between
SYNC_EVERY = 1.0


@cache
def boot_id() -> str:
    """This boot's id: a page cache (and the unsynced writes it holds) belongs to one boot."""
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""  # no boot id: nothing written but not synced is ever trusted


@dataclass
class Saved:
    """What a checkpoint file lets a retry skip."""

    #: ranges the retry may take as done: synced ones, plus written ones from this boot
    ranges: list[Range]
    #: the file was last replaced on this boot: unsynced claims made then (a heartbeat's) still hold
    same_boot: bool


class CheckpointFile:
    """One checkpoint file: ``load``, ``save`` (atomic replace), ``remove``."""

    def __init__(self, path: str | Path, key: str) -> None:
        #: the file; its temporary siblings end in ``.tmp-…``
        self.path = Path(path)
        #: names the work, so that a file left by other work is never trusted
        self.key = key

    def load(self) -> Saved | None:
        """None: no file. A file that cannot be read, or is for other work, claims nothing."""
        try:
            raw = self.path.read_text(encoding="ascii")
        except FileNotFoundError:
            return None
        except (OSError, UnicodeDecodeError):
            return Saved([], False)
        try:
            data = json.loads(raw)
            if data.get("key") != self.key:
                return Saved([], False)
            same_boot = bool(boot_id()) and data.get("boot") == boot_id()
            claims = [(int(a), int(b)) for a, b in data.get("synced", [])]
            if same_boot:
                claims += [(int(a), int(b)) for a, b in data.get("written", [])]
        except (ValueError, TypeError, AttributeError):
            return Saved([], False)  # e.g. a torn write after a crash
        return Saved(merge(claims), same_boot)

    def save(self, synced: list[Range], written: list[Range], *, durable: bool) -> None:
        """Replace the file; ``durable`` fsyncs it and its folder (the ``synced`` claim's renewal)."""
        self.install(self.stage(synced, written, durable=durable))
        if durable:
            self.sync_folder()

    def stage(self, synced: list[Range], written: list[Range], *, durable: bool) -> Path:
        """Write the claims beside the file (fsynced if ``durable``); ``install`` puts them in place.

        Split from the rename so that the slow part, the fsync, needs no lock against other writers.
        """
        data = {"key": self.key, "boot": boot_id(), "synced": synced, "written": written}
        # One temporary name per kind of writer: the fsyncing thread and the per-chunk writer never
        # share one, and each rename installs a whole file.
        tmp = self.path.with_name(f"{self.path.name}.tmp-{'sync' if durable else 'fast'}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        try:
            os.write(fd, json.dumps(data, separators=(",", ":")).encode("ascii"))
            if durable:
                os.fsync(fd)
        finally:
            os.close(fd)
        return tmp

    def install(self, staged: Path) -> None:
        os.replace(staged, self.path)

    def sync_folder(self) -> None:
        """Makes the last rename durable."""
        folder = os.open(self.path.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            os.fsync(folder)
        finally:
            os.close(folder)

    def remove(self) -> None:
        """Done (or the work is gone): no leftovers in scratch."""
        for path in (self.path, *(self.path.with_name(f"{self.path.name}.tmp-{k}") for k in ("sync", "fast"))):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()


class Checkpointer:
    """Keeps a ``CheckpointFile`` up with one copy onto one target.

    ``begin`` syncs the target and makes the starting claim durable, before anything is written:
    a stale file (a target that was recreated) never outlives the attempt's first write. Each
    ``offer`` (done ranges, as chunks complete) replaces the same-boot ``written`` claim where the
    target's writes outlive the process, and at most every ``sync_every`` seconds starts a
    background renewal of the ``synced`` claim: it takes the ranges offered *before* it syncs the
    target, so it never claims a byte that was not on stable storage. Offers go on while it syncs;
    its file, once installed, is followed at once by the latest offer's, so the file never goes
    back behind what an offer (and the progress reported after it) already claimed. ``finish`` waits for it and
    makes the last offer durable: a kill between the copy's end and the step's end redoes nothing.
    """

    def __init__(self, file: CheckpointFile, *, sync_every: float = SYNC_EVERY) -> None:
        #: where the claims go
        self.file = file
        #: seconds between two renewals of the durable claim (bounded overhead)
        self.sync_every = sync_every
        #: set by ``begin``: whose writes are claimed
        self._target: DiskTarget | None = None
        #: the durable claim, as last fsynced (carried along by the per-chunk writes)
        self._synced: list[Range] = []
        #: the last ranges offered
        self._offered: list[Range] = []
        #: the background renewal in flight, if any: at most one at a time
        self._renewal: asyncio.Future[None] | None = None
        #: when the last renewal started
        self._last = 0.0
        #: held to install a file and to read the claims it holds: a renewal's file, staged while
        #: offers went on, must never be the last one installed (a kill would find an older claim)
        self._lock = threading.Lock()
        #: renewals and per-chunk writes done (for tests and the bench)
        self.renewals = 0
        self.writes = 0

    async def begin(self, target: DiskTarget, ranges: list[Range]) -> None:
        self._target = target
        claim = self._offered = merge(ranges)
        await asyncio.to_thread(self._renew, claim, claim)
        self._last = time.monotonic()

    async def offer(self, ranges: list[Range]) -> None:
        target = self._target
        if target is None:
            raise RuntimeError("Checkpointer.offer before begin")
        with self._lock:  # never held across an fsync: at most a renewal's rename and small write
            self._offered = ranges
            if target.writes_survive_exit:
                self.file.save(self._synced, ranges, durable=False)
                self.writes += 1
        due = time.monotonic() - self._last >= self.sync_every
        if due and (self._renewal is None or self._renewal.done()):
            if self._renewal is not None:
                self._renewal.result()  # a failed renewal fails the copy, not silently the checkpoint
            self._last = time.monotonic()
            written = ranges if target.writes_survive_exit else []
            self._renewal = asyncio.get_running_loop().run_in_executor(None, self._renew, list(ranges), written)
            # retrieved here if the copy fails meanwhile (no "exception never retrieved" warning)
            self._renewal.add_done_callback(lambda f: f.cancelled() or f.exception())

    async def finish(self) -> None:
        if self._renewal is not None:
            await asyncio.shield(self._renewal)
        if self._target is not None and self._offered != self._synced:
            written = self._offered if self._target.writes_survive_exit else []
            await asyncio.to_thread(self._renew, self._offered, written)

    def _renew(self, claim: list[Range], written: list[Range]) -> None:
        target = self._target
        assert target is not None
        target.sync()
        staged = self.file.stage(claim, written, durable=True)
        with self._lock:
            self.file.install(staged)
            self._synced = claim
            latest = self._offered
            if target.writes_survive_exit and latest != written:
                # Offers made during the sync saved newer same-boot claims, which the rename just
                # replaced with ``written``: put the newest back before anyone can read the file.
                self.file.save(claim, latest, durable=False)
                self.writes += 1
        self.file.sync_folder()
        self.renewals += 1
