"""Guest bytes of a local image read straight from its file, where ``qemu-img map`` says they are.

Reading a fresh qcow2 back through ``qemu-nbd`` costs about 2 CPU-s per GiB on the bench machine
(every byte through a second process and a socket), more than writing it with ``qemu-img
convert``. For an uncompressed, unencrypted image without a backing file, ``qemu-img map``
gives the host offset of every data extent, and the depth of the file in the backing chain that
holds it; those bytes are exactly what a guest reads there, and everything else reads as zeros. So
such an image is read in place, at page-cache speed: ``readinto`` with ``pread``, and ``pages``
(copying) and ``feed`` (hashing) as views of the files' mapped pages, no copy at all. A morphed
disk (a qcow2 overlay on its raw export) qualifies: each layer is raw or qcow2. ``open_mapped``
returns ``None`` when an image does not (compressed clusters, encryption, another format in the
chain): callers then read through ``qemu-nbd``.
"""

from __future__ import annotations

import bisect
import json
import os
import subprocess
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path

from diskio.base import DiskSource, Extent
from diskio.mapped import Pages, feed_file

#: formats whose host offsets hold guest bytes as they are (no per-cluster transform)
MAPPABLE_FORMATS = frozenset({"raw", "qcow2"})


@dataclass(frozen=True, slots=True)
class _Entry:
    start: int
    length: int
    host: int | None  # None: reads as zeros
    layer: int = 0  # the file of the backing chain that holds it (0: the image itself)


class MappedImageReader(DiskSource):
    """Read-only guest view of an image file from its ``qemu-img map`` (see the module docstring)."""

    io_size = 1024 * 1024

    def __init__(self, path: Path, size: int, entries: list[_Entry], chain: list[Path] | None = None) -> None:
        self.path = path
        self._size = size
        self._entries = entries
        self._starts = [e.start for e in entries]
        self._fds: list[int] = []
        try:
            for file in chain or [path]:
                self._fds.append(os.open(file, os.O_RDONLY | os.O_CLOEXEC))
        except OSError:
            self.close()
            raise
        self._unmappable = False

    @property
    def size(self) -> int:
        return self._size

    def extents(self) -> list[Extent]:
        return [Extent(e.start, e.length) for e in self._entries if e.host is not None]

    def read(self, offset: int, length: int) -> bytes:
        buf = bytearray(max(0, min(length, self._size - offset)))
        n = self.readinto(offset, memoryview(buf))
        return bytes(buf[:n])

    def readinto(self, offset: int, view: memoryview) -> int:
        n = max(0, min(len(view), self._size - offset))
        pos = 0
        i = max(0, bisect.bisect_right(self._starts, offset) - 1)
        while pos < n:
            if i >= len(self._entries):
                view[pos:n] = bytes(n - pos)  # past the map: qemu-img maps the whole disk, so never
                break
            e = self._entries[i]
            at = offset + pos
            if at >= e.start + e.length:
                i += 1
                continue
            take = min(n - pos, e.start + e.length - at)
            part = view[pos : pos + take]
            if e.host is None:
                part[:] = bytes(take)
            else:
                got = 0
                while got < take:
                    r = os.preadv(self._fds[e.layer], [part[got:]], e.host + at - e.start + got)
                    if r == 0:
                        raise OSError(f"{self.path}: short read at host offset {e.host + at - e.start + got}")
                    got += r
            pos += take
            i += 1
        return n

    def feed(self, offset: int, length: int, sink: Callable[[memoryview], object], buf: bytearray) -> None:
        """Views of the image file's own pages where the map has data, zeros elsewhere: no copy."""
        piece, end = len(buf), offset + length
        if end > self._size:
            raise OSError(f"{self.path}: read past the disk's end ({end} > {self._size})")
        i = max(0, bisect.bisect_right(self._starts, offset) - 1)
        at = offset
        while at < end:
            e = self._entries[i]  # qemu-img maps the whole disk, so an entry holds ``at``
            take = min(end, e.start + e.length) - at
            if take <= 0:
                i += 1
                continue
            if e.host is None:
                zeros = memoryview(bytes(min(piece, take)))
                for pos in range(0, take, piece):
                    sink(zeros[: min(piece, take - pos)])
            else:
                feed_file(self._fds[e.layer], e.host + at - e.start, take, sink, piece)
            at += take
            i += 1

    def pages(self, offset: int, length: int) -> AbstractContextManager[memoryview] | None:
        """The files' own pages where one data extent holds the whole range (most chunks of a disk);
        None across extents or zeros: the copier then reads into its buffers."""
        i = bisect.bisect_right(self._starts, offset) - 1
        if self._unmappable or i < 0 or length <= 0:
            return None
        e = self._entries[i]
        if e.host is None or offset + length > e.start + e.length:
            return None
        try:
            return Pages(self._fds[e.layer], e.host + offset - e.start, length)
        except (OSError, ValueError):  # a file system without mmap: read into buffers instead
            self._unmappable = True
            return None

    def close(self) -> None:
        while self._fds:
            os.close(self._fds.pop())


def open_mapped(path: str | Path, fmt: str) -> MappedImageReader | None:
    """A ``MappedImageReader`` for ``path``, or ``None`` when its bytes cannot be read in place."""
    if fmt not in MAPPABLE_FORMATS:
        return None
    path = Path(path).resolve()  # so that qemu-img names the backing files by absolute paths
    chain = json.loads(subprocess.run(
        ["qemu-img", "info", "--backing-chain", "--output=json", "-f", fmt, str(path)],
        check=True, capture_output=True, text=True,
    ).stdout)
    if any(layer.get("format") not in MAPPABLE_FORMATS or layer.get("encrypted") for layer in chain):
        return None
    out = subprocess.run(
        ["qemu-img", "map", "--output=json", "-f", fmt, str(path)], check=True, capture_output=True, text=True
    ).stdout
    entries: list[_Entry] = []
    for item in json.loads(out):
        start, length = int(item["start"]), int(item["length"])
        if item.get("data") and not item.get("zero"):
            if "offset" not in item:  # compressed or otherwise transformed: not readable in place
                return None
            entries.append(_Entry(start, length, int(item["offset"]), int(item.get("depth", 0))))
        else:  # zeros, a hole in every layer, or past the end of a shorter backing file
            entries.append(_Entry(start, length, None))
    size = int(chain[0]["virtual-size"])
    return MappedImageReader(path, size, entries, [Path(layer["filename"]) for layer in chain])
