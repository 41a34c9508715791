"""Guest-visible bytes of a hosted sparse VMDK (streamOptimized or monolithicSparse), by range reads.

vSphere exports (NFC leases, OVAs) and many datastore files are sparse VMDKs: a header, a
grain directory, grain tables, and grains (64 KiB by default), each grain zlib-compressed and
preceded by a 12-byte marker in the streamOptimized flavour. This reader loads the directory and
tables once (small range reads), and then serves any guest range by reading only the grains it
covers, so that an incremental copy fetches only the compressed grains of the changed areas.
It works over any ``RangeReader`` (an HTTP URL with Range support, a slice of a local file).

Not supported (refused with ``InvalidInput``): delta disks that need a parent, SESparse, and
descriptor-only files (callers resolve a flat descriptor to its extent file themselves).
"""

from __future__ import annotations

import struct
import zlib
from array import array
from dataclasses import dataclass
from typing import Protocol

from core.errors import InvalidInput, TransferError
from diskio.base import Extent

SECTOR = 512
MAGIC = b"KDMV"
GD_AT_END = 0xFFFFFFFFFFFFFFFF
FLAG_COMPRESSED = 1 << 16
FLAG_MARKERS = 1 << 17
_HEADER = struct.Struct("<4sIIQQQQIQQQB4sH")
_MARKER = struct.Struct("<QI")


class RangeReader(Protocol):
    """Random access to the bytes of one file."""

    @property
    def size(self) -> int: ...

    def read_at(self, offset: int, length: int) -> bytes: ...


@dataclass(frozen=True)
class SparseHeader:
    flags: int
    capacity: int  # sectors
    grain_size: int  # sectors
    gtes_per_gt: int
    gd_offset: int  # sectors

    @property
    def compressed(self) -> bool:
        return bool(self.flags & FLAG_COMPRESSED)

    @classmethod
    def parse(cls, block: bytes) -> SparseHeader:
        if len(block) < _HEADER.size or block[:4] != MAGIC:
            raise InvalidInput("not a sparse VMDK (no KDMV header)")
        fields = _HEADER.unpack_from(block)
        version, flags, capacity, grain, gtes, gd, algo = (fields[i] for i in (1, 2, 3, 4, 7, 9, 13))
        if version not in (1, 2, 3):
            raise InvalidInput(f"unsupported sparse VMDK version {version}")
        if flags & FLAG_COMPRESSED and algo != 1:
            raise InvalidInput(f"unsupported VMDK grain compression {algo}")
        if grain == 0 or gtes == 0:
            raise InvalidInput("corrupt sparse VMDK header (zero grain size)")
        return cls(flags, capacity, grain, gtes, gd)


def is_sparse_vmdk(head: bytes) -> bool:
    """Whether a file starting with ``head`` is a hosted sparse VMDK."""
    return head[:4] == MAGIC


class SparseVmdk:
    """Random-access guest view of a sparse VMDK. Thread-safe after construction."""

    def __init__(self, reader: RangeReader) -> None:
        self._reader = reader
        header = SparseHeader.parse(reader.read_at(0, SECTOR))
        if header.gd_offset == GD_AT_END:
            # streamOptimized written as a stream: the real header is the footer, 1 KiB from the end
            header = SparseHeader.parse(reader.read_at(reader.size - 2 * SECTOR, SECTOR))
        self.header = header
        self.grain_bytes = header.grain_size * SECTOR
        self.size = header.capacity * SECTOR
        self._grains = self._load_tables()

    def _load_tables(self) -> array[int]:
        h = self.header
        grains = -(-h.capacity // h.grain_size)
        n_gts = -(-grains // h.gtes_per_gt)
        gd = array("I", self._reader.read_at(h.gd_offset * SECTOR, n_gts * 4))
        if len(gd) != n_gts:
            raise TransferError("truncated VMDK grain directory")
        table = array("I", bytes(grains * 4))
        # First allocated sector of each table, to bound compressed grains without a full index.
        self._gt_first = array("I", bytes(n_gts * 4))
        gt_bytes = h.gtes_per_gt * 4
        # Read tables in runs of adjacent ones (monolithicSparse keeps them contiguous).
        order = sorted((s, i) for i, s in enumerate(gd) if s)
        k = 0
        while k < len(order):
            j = k
            while j + 1 < len(order) and order[j + 1][0] * SECTOR == order[j][0] * SECTOR + gt_bytes:
                j += 1
            blob = self._reader.read_at(order[k][0] * SECTOR, (j - k + 1) * gt_bytes)
            for n, (_s, gt_index) in enumerate(order[k : j + 1]):
                entries = array("I", blob[n * gt_bytes : (n + 1) * gt_bytes])
                first = gt_index * h.gtes_per_gt
                count = min(h.gtes_per_gt, grains - first)
                table[first : first + count] = entries[:count]
                self._gt_first[gt_index] = next((e for e in entries[:count] if e > 1), 0)
            k = j + 1
        return table

    def extents(self) -> list[Extent]:
        """Guest ranges backed by allocated grains, merged."""
        out: list[Extent] = []
        for g, sector in enumerate(self._grains):
            if sector <= 1:  # 0: unallocated, 1: zeroed grain
                continue
            start = g * self.grain_bytes
            length = min(self.grain_bytes, self.size - start)
            if out and out[-1].end == start:
                out[-1] = Extent(out[-1].offset, out[-1].length + length)
            else:
                out.append(Extent(start, length))
        return out

    def _grain_span(self, grain: int) -> int:
        """Upper bound of the bytes grain ``grain`` occupies in the file, marker included.

        Objects never overlap, so any allocated grain at a higher sector bounds this one;
        writers lay grains out in guest order, so the next allocated grain is the tight bound.
        """
        if not self.header.compressed:
            return self.grain_bytes
        worst = _MARKER.size + self.grain_bytes + self.grain_bytes // 100 + 64
        sector, per_gt = self._grains[grain], self.header.gtes_per_gt
        table_end = min((grain // per_gt + 1) * per_gt, len(self._grains))
        for nxt in range(grain + 1, table_end):
            if self._grains[nxt] > sector:
                return min((self._grains[nxt] - sector) * SECTOR, worst)
        for first in self._gt_first[grain // per_gt + 1 :]:
            if first > sector:
                return min((first - sector) * SECTOR, worst)
        return worst

    def _decode(self, blob: bytes, pos: int, grain: int) -> bytes:
        if not self.header.compressed:
            data = blob[pos : pos + self.grain_bytes]
            if len(data) < self.grain_bytes and pos + len(data) < self.size:
                raise TransferError(f"VMDK grain {grain} is cut short (truncated file?)")
            return data.ljust(self.grain_bytes, b"\0")
        if pos + _MARKER.size > len(blob):
            raise TransferError(f"VMDK grain {grain} lies beyond the end of the file (truncated file?)")
        lba, size = _MARKER.unpack_from(blob, pos)
        if lba != grain * self.header.grain_size:
            raise TransferError(f"VMDK grain marker at byte {pos} names sector {lba}, not grain {grain}")
        payload = blob[pos + _MARKER.size : pos + _MARKER.size + size]
        try:
            data = zlib.decompress(payload)
        except zlib.error:
            try:
                data = zlib.decompress(payload, -15)  # raw deflate, as some writers emit
            except zlib.error as exc:
                raise TransferError(
                    f"VMDK grain {grain} does not decompress ({exc}); truncated file?"
                ) from None
        return data.ljust(self.grain_bytes, b"\0")

    def read(self, offset: int, length: int) -> bytes:
        """Guest bytes ``[offset, offset+length)``, short only at the end of the disk."""
        length = max(0, min(length, self.size - offset))
        if length == 0:
            return b""
        out = bytearray(length)
        first, last = offset // self.grain_bytes, (offset + length - 1) // self.grain_bytes
        wanted = [(self._grains[g], g) for g in range(first, last + 1) if self._grains[g] > 1]
        wanted.sort()
        k = 0
        while k < len(wanted):
            # One range read per run of grains that sit close together in the file.
            j = k
            while (
                j + 1 < len(wanted)
                and (wanted[j + 1][0] - wanted[j][0]) * SECTOR <= self._grain_span(wanted[j][1]) + 64 * 1024
            ):
                j += 1
            base = wanted[k][0] * SECTOR
            end = min(wanted[j][0] * SECTOR + self._grain_span(wanted[j][1]), self._reader.size)
            blob = self._reader.read_at(base, end - base)
            for sector, g in wanted[k : j + 1]:
                data = self._decode(blob, sector * SECTOR - base, g)
                g_start = g * self.grain_bytes
                lo, hi = max(offset, g_start), min(offset + length, g_start + self.grain_bytes)
                out[lo - offset : hi - offset] = data[lo - g_start : hi - g_start]
            k = j + 1
        return bytes(out)
