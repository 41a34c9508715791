"""A disk read out of a gzip'd tarball holding ``disk.raw`` (what a GCE image export writes), streamed.

A gzip stream cannot be read at an offset: every byte before it must be inflated first. So this
source reads forward only, one stream at a time, and keeps what it inflated on the way to a read
that came early (the copier's lanes ask for neighbouring chunks out of order) for the reads that
come late. A read behind the stream that nothing kept (rare: a lane far behind) opens the object
again and reads forward to it: slow, but always right.

``disk.raw`` may be a GNU sparse member (``tar -S``, or Sterna's own ``diskio.sparsetar``): then
its map is the extents, and holes cost nothing. Daisy's ``gce_export`` writes a regular member,
whose holes are compressed zeros: the extents are then the whole disk (allowed: "may
over-approximate"), and the copier skips the zero chunks it reads.
"""

from __future__ import annotations

import io
import tarfile
import threading
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import IO, Any

from core.errors import IntegrityError, InvalidInput
from diskio.base import DiskSource, Extent

#: how much inflated data before a read is kept for the lanes that asked for it later
KEEP = 96 * 1024 * 1024
_BUFSIZE = 1024 * 1024


class _Gunzip(io.RawIOBase):
    """A gzip stream inflated at most ``n`` bytes at a time. tarfile's own ``r|gz`` inflates a whole input
    buffer at once and slices what it made again and again: a buffer of compressed zeros (a disk's holes
    in a regular member) inflates to hundreds of MiB, which makes its reads quadratic."""

    def __init__(self, raw: IO[bytes]) -> None:
        super().__init__()
        self._raw = raw
        self._z = zlib.decompressobj(wbits=47)  # gzip or zlib header, detected
        self._tail = b""

    def readable(self) -> bool:
        return True

    def read(self, n: int = -1) -> bytes:
        if n < 0:
            raise ValueError("read the stream a piece at a time")
        out = []
        while n > 0:
            if not self._tail:
                self._tail = self._raw.read(_BUFSIZE)
                if not self._tail:
                    break
            data = self._z.decompress(self._tail, n)
            if self._z.eof:  # a member ends; what follows is the next one (gzip streams concatenate)
                self._tail = self._z.unused_data
                self._z = zlib.decompressobj(wbits=47)
            else:
                self._tail = self._z.unconsumed_tail
            out.append(data)
            n -= len(data)
        return b"".join(out)


@dataclass
class _Kept:
    start: int
    data: bytes
    used: int = 0

    @property
    def end(self) -> int:
        return self.start + len(self.data)


class TarballDiskSource(DiskSource):
    """``open_stream`` opens the object afresh (a new forward-only read); ``size`` is what the disk must be."""

    def __init__(self, open_stream: Callable[[], IO[bytes]], size: int, what: str) -> None:
        self._open_stream, self._size, self._what = open_stream, size, what
        self._lock = threading.Lock()
        self._kept: list[_Kept] = []
        self.opened = 0
        self._stream: Any = None
        self._start()
        member = self._member
        if member.size != size:
            self.close()
            raise IntegrityError(f"{what}: disk.raw holds {member.size} bytes, the disk {size}")
        sparse = getattr(member, "sparse", None)
        self._extents = ([Extent(o, n) for o, n in sparse if n] if sparse is not None
                         else [Extent(0, size)] if size else [])

    def _start(self) -> None:
        self.close()
        self._stream = self._open_stream()
        try:
            # Kept open across reads on purpose: the stream is this source's position.
            self._tar = tarfile.open(fileobj=_Gunzip(self._stream), mode="r|", bufsize=_BUFSIZE)  # noqa: SIM115
            member = self._tar.next()
        except (tarfile.TarError, OSError, EOFError, zlib.error) as e:
            raise InvalidInput(f"{self._what} is not a gzip'd tar ({e})") from None
        if member is None or member.name.lstrip("./") != "disk.raw" or not member.isreg():
            raise InvalidInput(f"{self._what} does not hold disk.raw as its first member")
        self._member = member
        reader = self._tar.extractfile(member)
        assert reader is not None
        self._file = reader
        self._pos = 0
        self.opened += 1

    @property
    def size(self) -> int:
        return self._size

    def extents(self) -> list[Extent]:
        return list(self._extents)

    def _take(self, offset: int, length: int) -> bytes | None:
        for kept in self._kept:
            if kept.start <= offset and offset + length <= kept.end:
                data = kept.data[offset - kept.start:offset - kept.start + length]
                kept.used += length
                if kept.used >= len(kept.data):
                    self._kept.remove(kept)
                return data
        return None

    def _forward(self, offset: int) -> None:
        """Move the stream to ``offset``, keeping the allocated bytes of the last ``KEEP`` before it."""
        keep_from = max(self._pos, offset - KEEP)
        for ext in self._extents:
            lo, hi = max(ext.offset, keep_from), min(ext.end, offset)
            if lo >= hi:
                continue
            self._skip_to(lo)
            self._kept.append(_Kept(lo, self._read_exact(hi - lo)))
            self._pos = hi
        self._skip_to(offset)

    def _skip_to(self, offset: int) -> None:
        # A member of a stream cannot seek (tarfile's stream has no ``seekable``): read and drop.
        # In a sparse member's holes tarfile makes up the zeros without inflating anything.
        while self._pos < offset:
            self._pos += len(self._read_exact(min(offset - self._pos, _BUFSIZE * 8)))
        # Bound memory whatever the read pattern: the oldest kept data goes first.
        while sum(len(k.data) - k.used for k in self._kept) > 2 * KEEP:
            self._kept.pop(0)

    def _read_exact(self, length: int) -> bytes:
        try:
            data = self._file.read(length)
        except (tarfile.TarError, zlib.error, EOFError) as e:
            raise IntegrityError(f"{self._what} cannot be read on: the tarball is truncated or corrupt ({e})") from None
        if len(data) != length:
            raise IntegrityError(f"{self._what} ended early: the tarball is truncated")
        return bytes(data)

    def read(self, offset: int, length: int) -> bytes:
        length = max(0, min(length, self._size - offset))
        with self._lock:
            kept = self._take(offset, length)
            if kept is not None:
                return kept
            if offset < self._pos:
                self._start()  # behind the stream and not kept: read the object again from its start
            if offset > self._pos:
                self._forward(offset)
            data = self._read_exact(length)
            self._pos = offset + length
            return data

    def close(self) -> None:
        stream, self._stream = self._stream, None
        if stream is not None:
            stream.close()
