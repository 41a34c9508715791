"""A new qcow2 image written by the copier itself, so that raw → qcow2 is verified as it is written.

Why not ``qemu-img convert`` and a check after it (``diskio.checked_convert``): the check has to read the
finished image again once qemu-img exits, about a quarter of qemu-img's own time on top of it (the bench's
1.34-1.43x on a Zen 3 EPYC, 2026-12-06). Written here, each chunk goes through the copier's lanes like a
raw file's: the source's pages are written once, hashed and compared with the image's own pages where
they lie (``diskio.mapped``) while the other lane writes.

What is written, and only this (qcow2 version 3, see qemu's ``docs/interop/qcow2.txt``): 64 KiB clusters,
16-bit refcounts, no backing file, no compression, encryption, snapshots, extended L2 entries or header
extensions. Data clusters are appended in the order the lanes first touch them (an image's clusters
need not follow the guest's order); the guest's zero runs stay unallocated and read as zeros. The L1
table sits right after the header; L2 tables are appended beside the data they map, and kept in memory
(64 KiB per 512 MiB of the guest touched) until ``flush`` writes them, the L1 table, the refcounts and
last the header. Until then the file is not an image: written under a temporary name and renamed once
flushed, as ``qemu-img convert`` output is. A killed copy is not resumed: a new target always starts a
new file (``zero_initialized``), so the copier drops its checkpoint. ``qemu-img check`` and ``qemu-img
compare`` are the tests' judges of every image written here.
"""

from __future__ import annotations

import os
import struct
import sys
import threading
from array import array
from collections.abc import Callable
from pathlib import Path

from core.errors import TransferError
from diskio.base import DiskTarget
from diskio.local import LENT_IO_SIZE, LOCAL_LANES, BlockWriter, punch_hole
from diskio.mapped import InPlace

CLUSTER_BITS = 16
CLUSTER = 1 << CLUSTER_BITS
#: 8-byte entries per L2 table of one cluster: each maps 512 MiB of the guest
L2_ENTRIES = CLUSTER // 8
#: 16-bit refcounts (refcount_order 4, qemu's default): a refcount block covers 32768 clusters (2 GiB)
REFCOUNT_ORDER = 4
REFCOUNTS_PER_BLOCK = CLUSTER * 8 >> REFCOUNT_ORDER
#: the cluster is used by exactly one reference (no snapshot shares it): qemu may write it in place
COPIED = 1 << 63
_HEADER = struct.Struct(">4sIQIIQIIQQIIQQQQII")
_MAGIC = b"QFI\xfb"
_HEADER_LENGTH = _HEADER.size  # 104: the version 3 header, without the optional compression type


class Qcow2FileTarget(DiskTarget):
    """A new qcow2 image of ``size`` guest bytes at ``path`` (replaced if it exists), valid once flushed."""

    granularity = 512
    alignment = 512
    max_write = 64 * 1024 * 1024
    # the data clusters are a local file's: the raw target's step size, lanes and single writer hold
    io_size = LENT_IO_SIZE
    lanes = LOCAL_LANES
    serial_writes = True
    zero_initialized = True
    # the cluster map lives in this process until ``flush``: a killed copy leaves no image to resume
    writes_survive_exit = False

    def __init__(self, path: str | Path, size: int, *, fsync: bool = False) -> None:
        self.path = Path(path)
        self._size = size
        self._fsync = fsync
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
        self._l1_size = -(-size // (CLUSTER * L2_ENTRIES))
        l1_clusters = max(1, -(-self._l1_size * 8 // CLUSTER))
        self._next = (1 + l1_clusters) * CLUSTER  # the header's cluster, then the L1 table's
        self._l2: dict[int, array[int]] = {}  # L1 index -> the L2 table's entries
        self._l2_at: dict[int, int] = {}  # L1 index -> the L2 table's host offset
        self._lock = threading.Lock()
        self._sealed = False
        self._pages = InPlace(self._fd, 0)
        self._writer = BlockWriter(self._fd)

    @property
    def size(self) -> int:
        return self._size

    def _host(self, cluster: int) -> int:
        """The host offset of a guest cluster, 0 where it is unallocated."""
        table = self._l2.get(cluster // L2_ENTRIES)
        return 0 if table is None else table[cluster % L2_ENTRIES] & ~COPIED

    def _allocate(self, cluster: int) -> int:
        """Give a guest cluster the next free host cluster (and its L2 table one first, if it has none)."""
        if self._sealed:
            # a repair after ``flush`` rewrites clusters it already has; a new one would need new refcounts
            raise TransferError(f"{self.path}: a new cluster after the image was finished")
        index = cluster // L2_ENTRIES
        table = self._l2.get(index)
        if table is None:
            table = self._l2[index] = array("Q", bytes(CLUSTER))
            self._l2_at[index] = self._next
            self._next += CLUSTER
        host = self._next
        self._next += CLUSTER
        table[cluster % L2_ENTRIES] = host | COPIED
        return host

    def _pieces(self, offset: int, length: int, *, allocate: bool) -> list[tuple[int, int, int]]:
        """``(guest, host, length)`` pieces of a guest range, merged where the host's are contiguous
        (host 0: unallocated, only when not ``allocate``)."""
        out: list[tuple[int, int, int]] = []
        end = offset + length
        with self._lock:
            while offset < end:
                # one L2 table's span at a time: most spans are new or already mapped in one run
                index = offset >> CLUSTER_BITS
                stop = min(end, ((index // L2_ENTRIES + 1) * L2_ENTRIES) << CLUSTER_BITS)
                host = self._run(offset, stop, allocate)
                if host is None:
                    self._cluster_pieces(offset, stop, allocate, out)
                elif out and _follows(out[-1], host):
                    guest, prev, done = out[-1]
                    out[-1] = (guest, prev, done + stop - offset)
                else:
                    out.append((offset, host, stop - offset))
                offset = stop
        return out

    def _run(self, offset: int, stop: int, allocate: bool) -> int | None:
        """The host offset of ``offset`` when ``[offset, stop)`` (inside one L2 table's span) maps to one
        contiguous host run, allocating it whole when none of it is allocated yet; else None."""
        first, last = offset >> CLUSTER_BITS, (stop - 1) >> CLUSTER_BITS
        n, within = last - first + 1, offset & (CLUSTER - 1)
        table = self._l2.get(first // L2_ENTRIES)
        at = first % L2_ENTRIES
        if table is None or table[at : at + n].count(0) == n:
            if not allocate:
                return 0  # all unallocated: reads as zeros
            host = self._allocate(first)
            table = self._l2[first // L2_ENTRIES]
            if n > 1:  # the next clusters follow it, straight after it in the file
                after = host + CLUSTER | COPIED
                table[at + 1 : at + n] = array("Q", range(after, after + (n - 1) * CLUSTER, CLUSTER))
                self._next += (n - 1) * CLUSTER
            return host + within
        start = table[at]
        if start and table[at : at + n] == array("Q", range(start, start + n * CLUSTER, CLUSTER)):
            return (start & ~COPIED) + within
        return None

    def _cluster_pieces(self, offset: int, end: int, allocate: bool, out: list[tuple[int, int, int]]) -> None:
        """``_pieces`` a cluster at a time, for a span mapped in several runs."""
        while offset < end:
            cluster = offset >> CLUSTER_BITS
            within = offset & (CLUSTER - 1)
            n = min(CLUSTER - within, end - offset)
            host = self._host(cluster)
            if not host and allocate:
                host = self._allocate(cluster)
            at = host + within if host else 0
            if out and _follows(out[-1], at):
                guest, prev, done = out[-1]
                out[-1] = (guest, prev, done + n)
            else:
                out.append((offset, at, n))
            offset += n

    def write(self, offset: int, data: bytes) -> None:
        self.write_view(offset, memoryview(data))

    def write_view(self, offset: int, view: memoryview) -> None:
        for guest, host, n in self._pieces(offset, len(view), allocate=True):
            self._writer.write(host, view[guest - offset : guest - offset + n])
            self._pages.end = max(self._pages.end, host + n)

    def write_zeroes(self, offset: int, length: int) -> None:
        # unallocated clusters already read as zeros; allocated ones get a hole in the host file
        for _guest, host, n in self._pieces(offset, length, allocate=False):
            if host and not punch_hole(self._fd, host, n):
                os.pwrite(self._fd, bytes(n), host)

    @property
    def readable(self) -> bool:
        return True

    def read(self, offset: int, length: int) -> bytes:
        buf = bytearray(max(0, min(length, self._size - offset)))
        self.readinto(offset, memoryview(buf))
        return bytes(buf)

    def readinto(self, offset: int, view: memoryview) -> int:
        n = max(0, min(len(view), self._size - offset))
        for guest, host, length in self._pieces(offset, n, allocate=False):
            self._pread(host, view[guest - offset : guest - offset + length])
        return n

    def _pread(self, host: int, view: memoryview) -> None:
        """Fill ``view`` from the host offset ``host``; zeros where it is 0 (unallocated) or past the file's
        end (a last cluster not written full yet)."""
        got = os.preadv(self._fd, [view], host) if host else 0
        if got < len(view):
            view[got:] = bytes(len(view) - got)

    def matches(self, offset: int, data: memoryview, scratch: bytearray) -> bool:
        """Compare ``data`` with the image's clusters where they lie; unallocated ones must be zeros."""
        space = memoryview(scratch)
        for guest, host, n in self._pieces(offset, len(data), allocate=False):
            with data[guest - offset : guest - offset + n] as part:
                same = self._pages.equals(host, part) if host else None
                if same is None:  # read back (or zeros), a scratch-full at a time
                    for pos in range(0, n, len(scratch)):
                        k = min(len(scratch), n - pos)
                        self._pread(host and host + pos, space[:k])
                        if space[:k] != part[pos : pos + k]:
                            return False
                elif not same:
                    return False
        return True

    def feed(self, offset: int, length: int, sink: Callable[[memoryview], object], buf: bytearray) -> None:
        """The image's clusters where they lie, zeros where none is allocated."""
        view = memoryview(buf)
        for _guest, host, n in self._pieces(offset, length, allocate=False):
            if host and self._pages.feed(host, n, sink, len(buf)):
                continue
            for pos in range(0, n, len(buf)):
                k = min(len(buf), n - pos)
                self._pread(host and host + pos, view[:k])
                sink(view[:k])

    def sync(self) -> None:
        os.fdatasync(self._fd)

    def flush(self) -> None:
        """Write the metadata (L2 tables, L1 table, refcounts, header last): the file is now an image."""
        with self._lock:
            self._sealed = True
            l1 = array("Q", bytes(8 * self._l1_size))
            for index, table in self._l2.items():
                self._put(self._l2_at[index], table)
                l1[index] = self._l2_at[index] | COPIED
            l1_offset = CLUSTER
            self._put(l1_offset, l1)
            used = self._next // CLUSTER
            table_clusters, blocks = _refcount_layout(used)
            table_at = used * CLUSTER
            total = used + table_clusters + blocks
            entries = array("Q", bytes(table_clusters * CLUSTER))
            for b in range(blocks):
                at = table_at + (table_clusters + b) * CLUSTER
                entries[b] = at
                first = b * REFCOUNTS_PER_BLOCK
                # every cluster up to the end is in use once: nothing is ever freed
                ones = min(REFCOUNTS_PER_BLOCK, total - first)
                self._put(at, array("H", [1]) * ones + array("H", [0]) * (REFCOUNTS_PER_BLOCK - ones))
            self._put(table_at, entries)
            os.ftruncate(self._fd, total * CLUSTER)
            # qemu reads whole 512-byte sectors and rounds a size down: rounded up, as qemu-img convert does
            sectors = -(-self._size // 512) * 512
            header = _HEADER.pack(_MAGIC, 3, 0, 0, CLUSTER_BITS, sectors, 0, self._l1_size, l1_offset, table_at,
                                  table_clusters, 0, 0, 0, 0, 0, REFCOUNT_ORDER, _HEADER_LENGTH)
            # the header extensions' end marker follows: eight zero bytes, as a new file already holds
            os.pwrite(self._fd, header, 0)
        if self._fsync:
            os.fdatasync(self._fd)

    def _put(self, offset: int, values: array[int]) -> None:
        """Write integers big-endian, as qcow2 stores them."""
        big = array(values.typecode, values)
        if sys.byteorder == "little":
            big.byteswap()
        os.pwrite(self._fd, big.tobytes(), offset)

    def close(self) -> None:
        self._pages.close()
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


def _follows(last: tuple[int, int, int], at: int) -> bool:
    """Whether a piece at host offset ``at`` (0: unallocated) continues the ``last`` one."""
    _guest, host, n = last
    return at == 0 if host == 0 else at == host + n


def _refcount_layout(used: int) -> tuple[int, int]:
    """Clusters for the refcount table and blocks that count ``used`` clusters and themselves."""
    table, blocks = 1, 1
    while True:
        need_blocks = -(-(used + table + blocks) // REFCOUNTS_PER_BLOCK)
        need_table = max(1, -(-need_blocks * 8 // CLUSTER))
        if (need_blocks, need_table) == (blocks, table):
            return table, blocks
        table, blocks = need_table, max(blocks, need_blocks)
