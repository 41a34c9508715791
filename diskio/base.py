"""The disk data engine's reader/writer contract.

Sources and targets are synchronous and thread-safe (positional reads and writes); the
copier drives them from a bounded thread pool under asyncio, so that the activity that
runs it keeps heartbeating and sees cancellation.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass

from core.errors import TransferError


@dataclass(frozen=True, order=True)
class Extent:
    offset: int
    length: int

    @property
    def end(self) -> int:
        return self.offset + self.length


def feed_by_reading(
    readinto: Callable[[int, memoryview], int], offset: int, length: int, sink: Callable[[memoryview], object],
    buf: bytearray,
) -> None:
    """``feed`` for a side that cannot lend its bytes: each piece read into ``buf``, then passed on."""
    view = memoryview(buf)
    for pos in range(0, length, len(buf)):
        n = min(len(buf), length - pos)
        if readinto(offset + pos, view[:n]) != n:
            raise TransferError(f"short read at {offset + pos}")
        sink(view[:n])


class DiskSource(ABC):
    """Guest-visible bytes of one disk."""

    #: preferred I/O size: the copier moves a chunk in steps of the larger of the source's
    #: and the target's preference (0: whole chunks). Local files want small steps that stay
    #: in the CPU cache while they are hashed and written; remote endpoints want large ones, unless
    #: they read a chunk's steps from one request (``begin_range``).
    io_size: int = 0
    #: chunks in flight this endpoint does best with (0: no preference). The copier takes it
    #: only when both endpoints state one (the smaller): a remote endpoint hides its round
    #: trips behind the copier's default, more lanes.
    lanes: int = 0

    @property
    @abstractmethod
    def size(self) -> int:
        """Virtual size in bytes."""

    @abstractmethod
    def extents(self) -> list[Extent]:
        """Allocated extents, sorted, non-overlapping. May over-approximate, never under."""

    @abstractmethod
    def read(self, offset: int, length: int) -> bytes:
        """Read ``length`` bytes at ``offset`` (short only at end of disk)."""

    def readinto(self, offset: int, view: memoryview) -> int:
        """Read ``len(view)`` bytes at ``offset`` into ``view``; returns the count read.

        The copier calls this with its own preallocated buffers; override it to avoid a copy.
        """
        data = self.read(offset, len(view))
        view[: len(data)] = data
        return len(data)

    def pages(self, offset: int, length: int) -> AbstractContextManager[memoryview] | None:
        """A view of ``[offset, offset + length)`` on the source's own memory, or None (the default).

        A local file lends its page-cache pages (``diskio.mapped``): the copier then hashes, writes
        and compares them where they lie, with no copy into a buffer first.
        """
        return None

    def feed(self, offset: int, length: int, sink: Callable[[memoryview], object], buf: bytearray) -> None:
        """Pass the bytes of ``[offset, offset + length)`` to ``sink`` in order, at most ``len(buf)`` at a time.

        For hashing a range without keeping it. By default each piece is read into ``buf``; a
        local file passes views of its pages instead, skipping the copy (``diskio.mapped``).
        """
        feed_by_reading(self.readinto, offset, length, sink, buf)

    def begin_range(self, offset: int, length: int) -> None:  # noqa: B027 - optional hook
        """The ``readinto`` calls that follow on this thread read ``[offset, offset + length)`` in order.

        The copier calls it before the steps of each chunk it moves. A source whose requests
        cost a round trip (HTTP) fetches the whole span with one request and serves the steps from
        its body; it must still answer any other ``readinto`` correctly (another offset, a span cut
        short by a stop or an error), and never reuse a connection whose body is half read. Files
        and block devices have nothing to gain: the default does nothing.
        """

    def raw_body(self, offset: int, length: int, head: memoryview) -> RawBody | None:
        """``[offset, offset + length)`` to be received straight from a socket, or None (the default).

        For the native lane (``diskio.native``), after ``begin_range``: a source read over plain HTTP opens
        the span's request, copies into ``head`` the body bytes its parser read already, and lends the
        connection's socket. The copier reports how far it read with ``RawBody.done``.
        """
        return None

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release handles."""


@dataclass
class RawBody:
    """A span's body lent by its source (``DiskSource.raw_body``), its first ``have`` bytes in the head."""

    fd: int
    have: int
    #: seconds without a byte before the read gives up (None: wait)
    timeout: float | None
    #: how far the body was read: the whole of it keeps the connection; less drops it, and ``readinto``
    #: asks for the rest with a new request
    done: Callable[[int], None]


class DiskTarget(ABC):
    """Where bytes are written. ``granularity`` and ``alignment`` constrain writes."""

    #: every write covers whole multiples of this many bytes (except the disk's tail)
    granularity: int = 512
    #: every write starts at a multiple of this
    alignment: int = 512
    #: largest single write the target accepts
    max_write: int = 64 * 1024 * 1024
    #: the target is new and reads as zeros everywhere (a new sparse file, a new volume): the
    #: copier skips zero chunks instead of calling ``write_zeroes``, and treats a checkpoint
    #: as stale, since a new target cannot hold an earlier attempt's bytes
    zero_initialized: bool = False
    #: preferred write size (0: whole chunks); see ``DiskSource.io_size``
    io_size: int = 0
    #: chunks in flight this target does best with (0: no preference); see ``DiskSource.lanes``
    lanes: int = 0
    #: a completed write outlives the process that made it (the kernel's page cache holds it, or a
    #: remote API acknowledged it): a same-boot checkpoint may claim it before ``sync``. False where
    #: a helper that dies with the worker buffers writes (qemu-nbd's caches): only ``sync`` keeps them
    writes_survive_exit: bool = False
    #: concurrent writes queue in the target anyway (a local file's inode lock): the copier lets one
    #: lane write at a time while the others hash and compare, instead of spinning on that lock
    serial_writes: bool = False

    @property
    @abstractmethod
    def size(self) -> int:
        """Virtual size in bytes."""

    @abstractmethod
    def write(self, offset: int, data: bytes) -> None:
        """Write ``data`` at ``offset``."""

    def write_view(self, offset: int, view: memoryview) -> None:
        """Write the bytes of ``view``; override to avoid the copy into ``bytes``."""
        self.write(offset, bytes(view))

    def write_zeroes(self, offset: int, length: int) -> None:
        """Make ``[offset, offset + length)`` read as zeros (punch a hole where possible)."""
        zeros = bytes(min(length, self.max_write))
        end = offset + length
        while offset < end:
            n = min(len(zeros), end - offset)
            self.write(offset, zeros[:n])
            offset += n

    @property
    def readable(self) -> bool:
        """Whether ``read`` can read back what was written (enables digest checks)."""
        return False

    def read(self, offset: int, length: int) -> bytes:
        raise NotImplementedError("this target cannot be read back")

    def readinto(self, offset: int, view: memoryview) -> int:
        """Read back into ``view``; returns the count read. Only when ``readable``."""
        data = self.read(offset, len(view))
        view[: len(data)] = data
        return len(data)

    def matches(self, offset: int, data: memoryview, scratch: bytearray) -> bool:
        """Whether the bytes at ``offset`` read back equal ``data`` (only when ``readable``).

        By default the bytes are read back into ``scratch``, ``len(scratch)`` at a time, and compared.
        A target whose bytes can be compared where they lie (a local file's pages) overrides this to
        skip the copy.
        """
        piece, space = len(scratch), memoryview(scratch)
        for pos in range(0, len(data), piece):
            part = data[pos : pos + piece]
            n = len(part)
            if self.readinto(offset + pos, space[:n]) != n or not scratch.startswith(part):
                return False
        return True

    def feed(self, offset: int, length: int, sink: Callable[[memoryview], object], buf: bytearray) -> None:
        """Pass the bytes of ``[offset, offset + length)`` as read back to ``sink`` in order, at most
        ``len(buf)`` at a time (only when ``readable``): to hash what the target holds.

        By default each piece is read back into ``buf``; a local file passes views of its pages instead.
        """
        feed_by_reading(self.readinto, offset, length, sink, buf)

    def raw_file(self) -> int | None:
        """A descriptor whose ``pwrite`` and ``pread`` are this target's writes and reads, or None (the default).

        For the native lane (``diskio.native``): a raw file's. The lane reports how far it wrote there
        with ``reached``.
        """
        return None

    def reached(self, end: int) -> None:  # noqa: B027 - optional hook
        """The native lane wrote through ``raw_file`` up to ``end`` (read back, or written when not
        verifying): the file is at least that long."""

    def resumed(self, offset: int, length: int) -> None:  # noqa: B027 - optional hook
        """An earlier attempt wrote ``[offset, offset + length)`` into this target, and a resumed copy
        does not write it again. Targets whose ``flush`` must know every write (an EBS snapshot's
        CompleteSnapshot takes the count of blocks written over its life) count it here."""

    def flush(self) -> None:  # noqa: B027 - optional hook
        """Make written data durable (fsync, complete multipart, ...)."""

    def sync(self) -> None:
        """Make every completed write survive a crash, mid-copy: a durable checkpoint claims only
        what was written before this call. ``flush`` by default; targets whose ``flush`` does more
        (completes an upload) override it."""
        self.flush()

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release handles."""
