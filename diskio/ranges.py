"""Byte-range arithmetic on sorted ``(offset, length)`` lists."""

from __future__ import annotations

import bisect
from collections.abc import Iterable

Range = tuple[int, int]


def merge(ranges: Iterable[Range]) -> list[Range]:
    """Sort and merge overlapping or touching ranges; drops empty ones."""
    out: list[list[int]] = []
    for off, length in sorted(r for r in ranges if r[1] > 0):
        end = off + length
        if out and off <= out[-1][1]:
            out[-1][1] = max(out[-1][1], end)
        else:
            out.append([off, end])
    return [(start, end - start) for start, end in out]


def subtract(ranges: Iterable[Range], minus: Iterable[Range]) -> list[Range]:
    """``ranges`` with every byte of ``minus`` removed."""
    cuts = merge(minus)
    out: list[Range] = []
    for off, length in merge(ranges):
        pos, end = off, off + length
        i = bisect.bisect_right(cuts, (pos, float("inf"))) - 1
        i = max(i, 0)
        while pos < end and i < len(cuts):
            c_off, c_len = cuts[i]
            c_end = c_off + c_len
            if c_end <= pos:
                i += 1
                continue
            if c_off >= end:
                break
            if c_off > pos:
                out.append((pos, c_off - pos))
            pos = max(pos, c_end)
            i += 1
        if pos < end:
            out.append((pos, end - pos))
    return out


def covers(ranges: list[Range], off: int, length: int) -> bool:
    """Whether the merged, sorted ``ranges`` contain all of ``[off, off + length)``."""
    i = bisect.bisect_right(ranges, (off, float("inf"))) - 1
    return i >= 0 and ranges[i][0] <= off and ranges[i][0] + ranges[i][1] >= off + length


def total(ranges: Iterable[Range]) -> int:
    return sum(length for _, length in ranges)


class RangeSet:
    """A growing set of byte ranges, kept merged so that its listing stays short."""

    def __init__(self, ranges: Iterable[Range] = ()) -> None:
        self._starts: list[int] = []
        self._ends: list[int] = []
        for off, length in merge(ranges):
            self._starts.append(off)
            self._ends.append(off + length)

    def add(self, off: int, length: int) -> None:
        """Add ``[off, off + length)``, merging with touching neighbours."""
        if length <= 0:
            return
        end = off + length
        # first range that ends at or after ``off`` and last that starts at or before ``end``
        lo = bisect.bisect_left(self._ends, off)
        hi = bisect.bisect_right(self._starts, end)
        if lo < hi:
            off = min(off, self._starts[lo])
            end = max(end, self._ends[hi - 1])
        self._starts[lo:hi] = [off]
        self._ends[lo:hi] = [end]

    def ranges(self) -> list[Range]:
        return [(s, e - s) for s, e in zip(self._starts, self._ends, strict=True)]

    def __len__(self) -> int:
        return len(self._starts)
