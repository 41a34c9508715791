"""Local files: a raw source that finds its extents with SEEK_DATA/SEEK_HOLE, and a sparse raw target.

Images in other formats (qcow2, vmdk, vpc, ...) are read through ``qemu-nbd``; see
``diskio.qemu``.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path

from core.errors import TransferError
from diskio.base import DiskSource, DiskTarget, Extent
from diskio.mapped import InPlace, Pages, feed_view

_FALLOC_FL_KEEP_SIZE = 0x01
_FALLOC_FL_PUNCH_HOLE = 0x02
_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
_libc.fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64]


def file_extents(fd: int, size: int) -> list[Extent]:
    """Data extents of an open file, from SEEK_DATA/SEEK_HOLE (the whole file if unsupported)."""
    extents: list[Extent] = []
    pos = 0
    try:
        while pos < size:
            try:
                data = os.lseek(fd, pos, os.SEEK_DATA)
            except OSError as exc:
                if exc.errno == errno.ENXIO:  # no data after pos
                    break
                raise
            hole = min(os.lseek(fd, data, os.SEEK_HOLE), size)
            extents.append(Extent(data, hole - data))
            pos = hole
    except OSError as exc:
        if exc.errno not in (errno.EINVAL, errno.EOPNOTSUPP):
            raise
        return [Extent(0, size)] if size else []
    return extents


def punch_hole(fd: int, offset: int, length: int) -> bool:
    """Make a file's range read as zeros by freeing its blocks (no data bytes move); False where the
    file system cannot, and the caller writes zeros instead."""
    return int(_libc.fallocate(fd, _FALLOC_FL_PUNCH_HOLE | _FALLOC_FL_KEEP_SIZE, offset, length)) == 0


class BlockWriter:
    """Writes whole views into a local file, each one's blocks allocated first in one ``fallocate`` call.

    Why: ext4 otherwise reserves a buffered write's blocks page by page (delayed allocation: 15 % of the
    samples of a raw→raw copy). Allocated in one call first, the bench disk's GiB took 0.248 s and
    0.35 CPU-s instead of 0.313 s and 0.40 (Zen 4 EPYC, 2026-12-07, 9 alternating rounds each). Only what is
    written is allocated, so the file stays as sparse as without it. A file system that cannot allocate
    ahead is just written to.
    """

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self._allocate = True

    def write(self, offset: int, view: memoryview) -> None:
        n = len(view)
        refused = self._allocate and _libc.fallocate(self._fd, _FALLOC_FL_KEEP_SIZE, offset, n) != 0
        # a file system that cannot stops being asked; any other refusal (no space): the write tells its story
        if refused and ctypes.get_errno() in (errno.EOPNOTSUPP, errno.ENOSYS):
            self._allocate = False
        done = os.pwritev(self._fd, [view], offset)
        while done < n:  # short: a write cut by a signal
            done += os.pwritev(self._fd, [view[done:]], offset + done)


def _pread_into(fd: int, offset: int, view: memoryview) -> int:
    done = os.preadv(fd, [view], offset) if len(view) else 0
    while done < len(view):  # short: the file's end, or a read cut by a signal
        n = os.preadv(fd, [view[done:]], offset + done)
        if n == 0:
            break
        done += n
    return done


#: a read-hash-write step this size (two buffers: 512 KiB a lane) stays in L2 cache; against 128 KiB
#: it halves the calls and GIL handoffs per GiB (5-9 % less CPU, bench raw→raw); 1 MiB steps cost 3x the CPU
LOCAL_IO_SIZE = 256 * 1024
#: a source lending its pages (``pages``) fills no buffer, so its steps need not fit in L2: 1 MiB
#: steps took 0.64-0.69 CPU-s per GiB on two lanes against 0.77-0.89 for 256 KiB (Zen 3 EPYC,
#: 2026-12-06, 3 rounds each); 2 MiB ones took 1.7-2.1, as the previous step size's cost came back
LENT_IO_SIZE = 1024 * 1024
#: lanes between local files: as many as the bench machine's cores. Buffered writes into one file
#: serialize on its inode lock, and each lane beyond the cores adds GIL handoffs (context switches
#: 17k -> 6k per GiB): 2 lanes cost 0.88 CPU-s against 4 lanes' 1.05 (same code, same run)
LOCAL_LANES = 2


class RawFileSource(DiskSource):
    """A raw image file (or block device), read with ``pread`` or lent as mapped pages (``pages``, ``feed``).

    Mapped pages assume the file keeps its size while it is copied: one truncated under the copy
    by another program raises SIGBUS, and the worker dies (its step is then retried from its
    checkpoint, as after any crash) instead of failing the step with a short read.
    """

    io_size = LENT_IO_SIZE
    lanes = LOCAL_LANES

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
        self._size = os.lseek(self._fd, 0, os.SEEK_END)
        self._unmappable = False

    @property
    def size(self) -> int:
        return self._size

    def extents(self) -> list[Extent]:
        return file_extents(self._fd, self._size)

    def read(self, offset: int, length: int) -> bytes:
        buf = bytearray(max(0, min(length, self._size - offset)))
        n = _pread_into(self._fd, offset, memoryview(buf))
        return bytes(buf[:n])

    def readinto(self, offset: int, view: memoryview) -> int:
        return _pread_into(self._fd, offset, view)

    def pages(self, offset: int, length: int) -> AbstractContextManager[memoryview] | None:
        if self._unmappable or length <= 0 or offset + length > self._size:
            return None
        try:
            return Pages(self._fd, offset, length)
        except (OSError, ValueError):  # a file system without mmap: read into buffers instead
            self._unmappable = True
            return None

    def feed(self, offset: int, length: int, sink: Callable[[memoryview], object], buf: bytearray) -> None:
        end = min(offset + length, self._size)
        if end - offset < length:
            raise TransferError(f"{self.path}: short read at {end}, the end of the file")
        lent = self.pages(offset, length)
        if lent is None:
            super().feed(offset, length, sink, buf)
            return
        with lent as view:
            feed_view(view, sink, len(buf))

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


class LocalFileTarget(DiskTarget):
    """A sparse raw file of ``size`` bytes.

    A missing or empty file is created sparse, so unwritten ranges read as zeros. An
    existing file (an earlier attempt) is reopened without truncation; it is only grown
    to ``size``. ``flush`` calls ``fdatasync`` only when ``fsync`` is set: worker-local
    scratch does not outlive its host, and the page cache survives a killed process.

    A new file gets its full length at ``flush``/``close``, not up front: ext4 writes that
    extend a file cost less kernel time than writes into a hole below its end. Reads see
    the logical size all along (zeros past the physical end).
    """

    granularity = 512
    alignment = 512
    max_write = 64 * 1024 * 1024
    io_size = LOCAL_IO_SIZE
    lanes = LOCAL_LANES
    # pwrite hands the bytes to the page cache, which outlives a killed worker
    writes_survive_exit = True
    # buffered writes into one file take its inode lock: a second writer spins on it (11 % of the
    # samples of a two-lane copy, perf, 2026-12-06)
    serial_writes = True

    def __init__(self, path: str | Path, size: int, *, fsync: bool = False) -> None:
        self.path = Path(path)
        self._size = size
        self._fsync = fsync
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        current = os.fstat(self._fd).st_size
        if current > size:
            os.close(self._fd)
            raise ValueError(f"{self.path} holds {current} bytes, more than the disk's {size}")
        self.zero_initialized = current == 0
        if 0 < current < size:
            os.ftruncate(self._fd, size)
        # compared in place below how far the file surely reaches: a mapped page past its end raises SIGBUS
        self._pages = InPlace(self._fd, size if current else 0)
        self._writer = BlockWriter(self._fd)

    @property
    def size(self) -> int:
        return self._size

    def write(self, offset: int, data: bytes) -> None:
        self.write_view(offset, memoryview(data))

    def write_view(self, offset: int, view: memoryview) -> None:
        self._writer.write(offset, view)
        self.reached(offset + len(view))

    def raw_file(self) -> int | None:
        return self._fd

    def reached(self, end: int) -> None:
        self._pages.end = max(self._pages.end, end)

    def write_zeroes(self, offset: int, length: int) -> None:
        if not punch_hole(self._fd, offset, length):
            super().write_zeroes(offset, length)

    @property
    def readable(self) -> bool:
        return True

    def read(self, offset: int, length: int) -> bytes:
        buf = bytearray(max(0, min(length, self._size - offset)))
        n = self.readinto(offset, memoryview(buf))
        return bytes(buf[:n])

    def readinto(self, offset: int, view: memoryview) -> int:
        n = _pread_into(self._fd, offset, view)
        logical = max(0, min(len(view), self._size - offset))
        if n < logical:  # past the physical end of a file not yet grown to its size
            view[n:logical] = bytes(logical - n)
        return logical

    def matches(self, offset: int, data: memoryview, scratch: bytearray) -> bool:
        """Compare ``data`` with the file's pages where they lie (``diskio.mapped``), not a copy of them."""
        if not data:
            return True
        same = self._pages.equals(offset, data)
        return super().matches(offset, data, scratch) if same is None else same

    def feed(self, offset: int, length: int, sink: Callable[[memoryview], object], buf: bytearray) -> None:
        """Views of the file's pages where they lie (``diskio.mapped``), not copies of them."""
        if not self._pages.feed(offset, length, sink, len(buf)):
            super().feed(offset, length, sink, buf)

    def extents(self) -> list[Extent]:
        """Data extents written so far (for tests and diagnostics)."""
        return file_extents(self._fd, self._size)

    def _grow(self) -> None:
        if os.fstat(self._fd).st_size < self._size:
            os.ftruncate(self._fd, self._size)
        self._pages.end = self._size

    def flush(self) -> None:
        self._grow()
        if self._fsync:
            os.fdatasync(self._fd)

    def sync(self) -> None:
        # Unlike ``flush``, always: a durable checkpoint must never claim bytes a crash can lose.
        os.fdatasync(self._fd)

    def close(self) -> None:
        self._pages.close()
        if self._fd >= 0:
            self._grow()
            os.close(self._fd)
            self._fd = -1


def open_local_source(path: str | Path, fmt: str = "raw") -> DiskSource:
    """A ``DiskSource`` for a local image file in qemu format ``fmt`` ("raw", "qcow2", "vmdk", "vpc"...).

    Raw files are read directly; other formats go through a read-only ``qemu-nbd``.
    """
    if fmt == "raw":
        return RawFileSource(path)
    from diskio.qemu import QemuNbdSource

    return QemuNbdSource(path, fmt)
