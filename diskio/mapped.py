"""A local file's pages lent where they lie: read-only mappings, and ``memcmp`` against them.

Why: the copier hashes, writes and verifies every byte. With ``pread`` into a buffer for the source
and again for the read-back, the kernel copies each byte twice more than the write itself. Lending
the page-cache pages instead (the source's through ``pages``, the target's through ``Window``)
leaves one copy, the write: on the Zen 3 EPYC of 2026-12-06 a one-lane loop over the bench disk's
GiB took 1.27-1.41 CPU-s with both ``pread``s, 0.88-1.00 with the target compared in place, and
0.54-0.56 with the source lent too (``cp --sparse=always``: 0.43-0.49).

Mappings are per chunk or window of several steps: mapping and unmapping each 256 KiB step costs
more than the copy it saves (measured, see the README's Performance section). Python's ``mmap``
refuses a range past the file's current end, and a new target file grows as its lanes write
(``LocalFileTarget``), so target windows are mapped with libc's ``mmap`` through ctypes. Touching a
mapped page past a file's end raises SIGBUS, which kills the process: the target compares only
bytes it knows the file holds, and a source is a file that keeps its size while it is read.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import mmap
import os
import threading
from collections.abc import Callable

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
_libc.mmap.restype = ctypes.c_void_p
_libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_int64]
_libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
_libc.memcmp.restype = ctypes.c_int
_libc.memcmp.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t]
_FAILED = ctypes.c_void_p(-1).value
PAGE = mmap.PAGESIZE


def address(view: memoryview) -> int:
    """Where a writable buffer's bytes start (a bytearray's, or a view of one)."""
    return ctypes.addressof(ctypes.c_char.from_buffer(view))


class Window:
    """``length`` bytes of an open file from ``offset`` (a multiple of the page size), mapped read-only."""

    __slots__ = ("_addr", "length", "offset")

    def __init__(self, fd: int, offset: int, length: int) -> None:
        addr = _libc.mmap(None, length, mmap.PROT_READ, mmap.MAP_SHARED, fd, offset)
        if addr is None or addr == _FAILED:
            err = ctypes.get_errno()
            raise OSError(err, f"mmap of {length} bytes at {offset}: {os.strerror(err)}")
        self.offset, self.length, self._addr = offset, length, addr

    def holds(self, offset: int, length: int) -> bool:
        return self.offset <= offset and offset + length <= self.offset + self.length

    def equals(self, offset: int, view: memoryview) -> bool:
        """Whether the file's bytes at ``offset`` (inside the window) equal ``view``'s."""
        same: int = _libc.memcmp(self._addr + offset - self.offset, address(view), len(view))
        return same == 0

    def view(self, offset: int, length: int) -> memoryview:
        """The file's bytes at ``offset`` (inside the window), where they lie. Read-only memory behind a
        writable-looking view (ctypes'): only to be read, and released before the window closes."""
        return memoryview((ctypes.c_ubyte * length).from_address(self._addr + offset - self.offset)).cast("B")

    def close(self) -> None:
        if self._addr is not None:
            _libc.munmap(self._addr, self.length)
            self._addr = None


#: bytes a lane maps at once to compare its writes (``InPlace``): 32 steps of 256 KiB per
#: ``mmap``/``munmap`` pair, and 8 MiB of page-cache pages in the process's RSS per lane at most
COMPARE_WINDOW = 8 * 1024 * 1024


class InPlace:
    """Compares and hashes a target file's own pages where they lie, through one ``Window`` per thread.

    ``end`` is how far the file surely reaches: its writer raises it as it writes. Lanes race to raise
    it, and a lost update only lowers it, so a comparison then reads back instead of touching a page
    past the end (SIGBUS).
    """

    def __init__(self, fd: int, end: int) -> None:
        self._fd = fd
        self.end = end
        self._unmappable = False
        self._local = threading.local()
        self._windows: set[Window] = set()
        self._lock = threading.Lock()

    def equals(self, offset: int, data: memoryview) -> bool | None:
        """Whether the file's bytes at ``offset`` equal ``data``; None where they cannot be mapped
        (past ``end``, a read-only ``data``, a file system without mmap): the caller reads back."""
        window = None if data.readonly else self._window(offset, len(data))
        return None if window is None else window.equals(offset, data)

    def feed(self, offset: int, length: int, sink: Callable[[memoryview], object], piece: int) -> bool:
        """Pass the file's bytes at ``offset`` to ``sink`` where they lie, ``piece`` bytes at a time; False,
        with nothing passed, where they cannot be mapped (as for ``equals``): the caller reads back."""
        window = self._window(offset, length)
        if window is None:
            return False
        with window.view(offset, length) as view:
            feed_view(view, sink, piece)
        return True

    def _window(self, offset: int, n: int) -> Window | None:
        """This thread's window, moved to hold ``[offset, offset + n)``; None where that cannot be mapped."""
        if self._unmappable or offset + n > self.end:
            return None
        window: Window | None = getattr(self._local, "window", None)
        if window is None or not window.holds(offset, n):
            start = offset // PAGE * PAGE
            length = max(COMPARE_WINDOW, -(-(offset + n - start) // PAGE) * PAGE)
            try:
                fresh = Window(self._fd, start, length)
            except OSError:
                self._unmappable = True
                return None
            with self._lock:
                if window is not None:
                    self._windows.discard(window)
                    window.close()
                self._windows.add(fresh)
            window = self._local.window = fresh
        return window

    def close(self) -> None:
        with self._lock:
            for window in self._windows:
                window.close()
            self._windows.clear()
        self._local = threading.local()


class Pages:
    """A view of ``length`` bytes of a file from ``offset``, on its page-cache pages (no copy), for a ``with``.

    For a file that keeps its size while it is read (a source, an image another tool finished):
    Python's ``mmap`` refuses a range past the end, and nothing shrinks the file under the mapping.
    The file is mapped at once, so that a file that cannot be mapped (``OSError``) is known before
    any byte moves. The view is read-only: a byte compare with it (``DiskTarget.matches``, only where the
    digests differ) reads the target back rather than mapping it. It is unmapped on exit, or when the
    last slice of the view someone holds goes.
    """

    def __init__(self, fd: int, offset: int, length: int) -> None:
        start = offset // PAGE * PAGE
        # Mapped in full in the call (MAP_POPULATE), not a page fault per 16 pages: raw→raw over the bench
        # disk's GiB took 0.298-0.303 s and 0.39 CPU-s, against 0.311-0.353 s and 0.41-0.43 CPU-s faulted in
        # (Zen 4 EPYC, 2026-12-07, 7-9 alternating rounds each). A source not in the page cache is read in
        # that call too, with readahead, as MADV_WILLNEED did before.
        self._mapping = mmap.mmap(fd, offset + length - start, flags=mmap.MAP_SHARED | mmap.MAP_POPULATE,
                                  prot=mmap.PROT_READ, offset=start)
        self._whole = memoryview(self._mapping)
        self._skip = offset - start

    def __enter__(self) -> memoryview:
        return self._whole[self._skip :]

    def __exit__(self, *exc: object) -> None:
        self._whole.release()
        # A slice that outlives the block (an error left it in a frame) keeps the mapping: the GC unmaps it.
        with contextlib.suppress(BufferError):
            self._mapping.close()


def feed_view(view: memoryview, sink: Callable[[memoryview], object], piece: int) -> None:
    """Pass ``view`` to ``sink`` ``piece`` bytes at a time, each slice released before the next."""
    for pos in range(0, len(view), piece):
        with view[pos : pos + piece] as part:
            sink(part)


def feed_file(fd: int, offset: int, length: int, sink: Callable[[memoryview], object], piece: int) -> None:
    """Pass ``length`` bytes of a file from ``offset`` to ``sink``, ``piece`` bytes at a time, as views
    of its pages (``Pages``): hashing them reads each byte once, where ``pread`` + hash reads it twice."""
    if length <= 0:
        return
    with Pages(fd, offset, length) as view:
        feed_view(view, sink, piece)
