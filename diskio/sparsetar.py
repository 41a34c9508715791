"""A disk as a gzip'd GNU ``oldgnu`` sparse tar holding one member, produced as a byte stream.

Google Compute Engine imports images only from such a tarball (``disk.raw`` inside,
``tar --format=oldgnu -Sczf``). Python's ``tarfile`` reads sparse members but cannot write
them, and running GNU tar would need the whole disk as a local file under that name; this
module writes the format itself from any ``DiskSource``, so that the bytes go straight from
the disk engine into an upload, with nothing staged on scratch.

Layout (GNU tar manual, "Old GNU Format"): one 512-byte header with type ``S``, up to four
``(offset, numbytes)`` sparse entries and the real size, then as many extension blocks of 21
entries as the map needs, then the data of the mapped regions back to back, padded to 512
bytes, then two zero blocks. The map is the source's allocated extents (an over-approximation
is fine: zeros inside a region are stored, gzip shrinks them); a file that ends in a hole gets
a last ``(realsize, 0)`` entry, which makes GNU tar extend the extracted file to its size.

The stream is deterministic (header times 0, gzip header without name or time), so an
interrupted upload can be resumed by producing the stream again and skipping what the
server already holds; ``crc32c`` of the whole stream lets the caller check the result.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator
from dataclasses import dataclass

from diskio.base import DiskSource, Extent

BLOCK = 512
#: entries in the header and in each extension block
_HEADER_ENTRIES = 4
_EXT_ENTRIES = 21
_READ = 1024 * 1024


def _number(value: int, width: int) -> bytes:
    """A tar numeric field: octal with a NUL, or GNU base-256 when the octal does not fit."""
    digits = width - 1
    if value < 8**digits:
        return f"{value:0{digits}o}".encode() + b"\0"
    if value >= 256 ** (width - 1):
        raise ValueError(f"{value} does not fit a {width}-byte tar field")
    return b"\x80" + value.to_bytes(width - 1, "big")


def _text(value: str, width: int) -> bytes:
    raw = value.encode()
    if len(raw) > width:
        raise ValueError(f"{value!r} is longer than {width} bytes")
    return raw.ljust(width, b"\0")


def _entries(entries: list[tuple[int, int]]) -> bytes:
    return b"".join(_number(off, 12) + _number(n, 12) for off, n in entries)


@dataclass(frozen=True)
class SparseMap:
    """The regions stored in the tarball, and the size the member unpacks to."""

    regions: list[tuple[int, int]]
    realsize: int

    @property
    def stored(self) -> int:
        return sum(n for _o, n in self.regions)


def sparse_map(extents: list[Extent], size: int, realsize: int) -> SparseMap:
    """Regions from ``extents`` clipped to ``size``, merged, and the end-of-file marker."""
    regions: list[tuple[int, int]] = []
    for e in sorted(extents):
        start, end = max(0, e.offset), min(size, e.end)
        if end <= start:
            continue
        if regions and start <= regions[-1][0] + regions[-1][1]:
            last_off, last_len = regions[-1]
            regions[-1] = (last_off, max(last_len, end - last_off))
        else:
            regions.append((start, end - start))
    if not regions or regions[-1][0] + regions[-1][1] < realsize:
        regions.append((realsize, 0))
    return SparseMap(regions, realsize)


def headers(name: str, smap: SparseMap, mode: int = 0o644) -> bytes:
    """The member's header block and its sparse extension blocks."""
    first, rest = smap.regions[:_HEADER_ENTRIES], smap.regions[_HEADER_ENTRIES:]
    block = bytearray(BLOCK)
    block[0:100] = _text(name, 100)
    block[100:108] = _number(mode, 8)
    block[108:116] = _number(0, 8)
    block[116:124] = _number(0, 8)
    block[124:136] = _number(smap.stored, 12)
    block[136:148] = _number(0, 12)
    block[148:156] = b" " * 8
    block[156:157] = b"S"
    block[257:265] = b"ustar  \0"  # the old GNU magic: "ustar" then "  \0", no version field
    block[265:297] = _text("root", 32)
    block[297:329] = _text("root", 32)
    block[386 : 386 + 24 * len(first)] = _entries(first)
    block[482] = 1 if rest else 0
    block[483:495] = _number(smap.realsize, 12)
    block[148:156] = f"{sum(block):06o}".encode() + b"\0 "
    out = [bytes(block)]
    while rest:
        part, rest = rest[:_EXT_ENTRIES], rest[_EXT_ENTRIES:]
        ext = bytearray(BLOCK)
        ext[0 : 24 * len(part)] = _entries(part)
        ext[504] = 1 if rest else 0
        out.append(bytes(ext))
    return b"".join(out)


class SparseTarStream:
    """``disk.raw`` (or ``name``) from ``source`` as a gzip'd oldgnu sparse tar, in pieces.

    ``realsize`` lets the member be larger than the source (GCE wants whole GiB): the extra
    tail is a hole. Iterate ``chunks()`` once; ``source_done`` counts the mapped source bytes
    already turned into output (for progress), ``crc32c`` is that of the bytes yielded so far.
    """

    def __init__(self, source: DiskSource, *, name: str = "disk.raw", realsize: int | None = None,
                 level: int = 1) -> None:
        realsize = source.size if realsize is None else realsize
        if realsize < source.size:
            raise ValueError("realsize is smaller than the disk")
        self.source = source
        self.name = name
        self.smap = sparse_map(source.extents(), source.size, realsize)
        self.level = level
        self.source_done = 0
        self.output_bytes = 0

    @property
    def source_total(self) -> int:
        return self.smap.stored

    def _tar_pieces(self) -> Iterator[bytes]:
        yield headers(self.name, self.smap)
        for off, length in self.smap.regions:
            pos = off
            while pos < off + length:
                n = min(_READ, off + length - pos)
                data = self.source.read(pos, n)
                if len(data) != n:
                    raise OSError(f"short read at {pos}: {len(data)} of {n} bytes")
                pos += n
                self.source_done += n
                yield data
        pad = -self.smap.stored % BLOCK
        yield b"\0" * (pad + 2 * BLOCK)

    def chunks(self) -> Iterator[bytes]:
        """The gzip'd stream; pieces of any size (the caller re-chunks)."""
        gz = zlib.compressobj(self.level, zlib.DEFLATED, 31)  # 31: gzip wrapper, mtime 0, no name
        for piece in self._tar_pieces():
            out = gz.compress(piece)
            if out:
                self.output_bytes += len(out)
                yield out
        out = gz.flush()
        self.output_bytes += len(out)
        yield out


def rechunk(pieces: Iterator[bytes], size: int) -> Iterator[bytes]:
    """Pieces regrouped into ``size``-byte chunks (the last may be shorter, never empty)."""
    buf = bytearray()
    for piece in pieces:
        buf += piece
        while len(buf) >= size:
            yield bytes(buf[:size])
            del buf[:size]
    if buf:
        yield bytes(buf)
