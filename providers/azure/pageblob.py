"""A managed disk's page blob, reached through a SAS URL, as a ``diskio`` target and source.

Azure pages are 512 bytes; one Put Page carries at most 4 MiB and, with ``validate_content``,
a Content-MD5 that the service checks. A disk created for upload reads as zeros, so the
target never sends a zero range: the copier skips zero chunks, and ``write`` also drops the
zero sub-blocks inside a chunk it is given.
"""

from __future__ import annotations

import bisect
import threading
from collections.abc import Iterable
from typing import Any

from core.errors import InvalidInput
from diskio.base import DiskSource, DiskTarget, Extent
from providers.azure.errors import azure_errors

PAGE = 512
MAX_PUT_PAGE = 4 * 1024 * 1024
#: zero detection inside a chunk: small enough to skip a filesystem's empty blocks, large
#: enough that a chunk is a few Put Page calls
SUB_BLOCK = 64 * 1024


def _blob(sas_url: str, verify: str | bool) -> Any:
    from azure.storage.blob import BlobClient

    return BlobClient.from_blob_url(sas_url, connection_verify=verify, max_page_size=MAX_PUT_PAGE)


def nonzero_runs(data: bytes | memoryview, block: int = SUB_BLOCK, limit: int = MAX_PUT_PAGE) -> list[tuple[int, int]]:
    """``(offset, length)`` runs of ``data`` whose ``block``-sized pieces are not all zero, each at most ``limit``."""
    view = memoryview(data)
    runs: list[tuple[int, int]] = []
    start = None
    for off in range(0, len(view), block):
        piece = view[off : off + block]
        zero = piece.tobytes().count(0) == len(piece)
        if not zero and start is None:
            start = off
        if start is not None and (zero or off + len(piece) - start > limit):
            if off > start:
                runs.append((start, off - start))
            start = None if zero else off
    if start is not None:
        runs.append((start, len(view) - start))
    return runs


class PageBlobTarget(DiskTarget):
    """Writes a disk created for upload (``ActiveUpload``) through its write SAS."""

    granularity = PAGE
    alignment = PAGE
    max_write = MAX_PUT_PAGE * 4
    # Always a disk just created for upload (a crashed upload is never resumed, see importer): it
    # reads as zeros, so zero chunks are skipped and any checkpoint is stale.
    zero_initialized = True
    # Azure has the page once Put Page returns (``flush``, hence ``sync``, is a no-op)
    writes_survive_exit = True

    def __init__(self, sas_url: str, size: int, *, verify: str | bool = True,
                 secrets: Iterable[str | None] = (), name: str = "disk") -> None:
        self._client = _blob(sas_url, verify)
        self._size = size
        self._secrets = (*secrets, sas_url.partition("?")[2] or None)
        self.name = name
        self._lock = threading.Lock()
        #: bytes sent with Put Page, and the calls made
        self.bytes_sent = 0
        self.pages_put = 0

    @property
    def size(self) -> int:
        return self._size

    def write(self, offset: int, data: bytes) -> None:
        if offset % PAGE or len(data) % PAGE:
            raise InvalidInput(f"page blob writes must be 512-byte aligned (offset {offset}, length {len(data)})")
        if offset + len(data) > self._size:
            raise InvalidInput(f"write past the end of {self.name}")
        view = memoryview(data)
        for start, length in nonzero_runs(view):
            self._put(offset + start, view[start : start + length].tobytes())

    def _put(self, offset: int, chunk: bytes) -> None:
        with azure_errors(f"writing {len(chunk)} bytes at {offset} of {self.name}", self._secrets):
            # validate_content: the request carries Content-MD5 and the service checks it.
            self._client.upload_page(chunk, offset=offset, length=len(chunk), validate_content=True)
        with self._lock:
            self.bytes_sent += len(chunk)
            self.pages_put += 1

    def write_zeroes(self, offset: int, length: int) -> None:
        """Nothing to do: the disk was created reading as zeros and nothing else wrote into it."""

    @property
    def readable(self) -> bool:
        return True

    def read(self, offset: int, length: int) -> bytes:
        length = max(0, min(length, self._size - offset))
        if length == 0:
            return b""
        with azure_errors(f"reading back {self.name}", self._secrets):
            return bytes(self._client.download_blob(offset=offset, length=length, validate_content=False).readall())

    def flush(self) -> None:
        """Every Put Page is durable when acknowledged."""


class _Window(threading.local):
    """One reading thread's last fetched window."""

    start = 0
    data = b""


class PageBlobSource(DiskSource):
    """Reads a disk or snapshot through a read SAS; extents are the blob's allocated page ranges.

    Reads ahead: a replica sync asks for one 64 KiB chunk at a time, and one GET per chunk makes
    a remote disk cost a round trip (and a billed transaction) per 64 KiB. A read that misses
    fetches up to 4 MiB from where it starts, clipped to the allocated range it is in, so a hole
    is never fetched and the bytes downloaded never exceed the allocated ones. Every allocated
    chunk of an Azure source is read (it reports no changed areas), so nothing read ahead is
    wasted; a source that skips chunks would want the window to grow only on sequential reads.
    Each reading thread (a copier lane, a sync batch) keeps its own window; snapshots don't change,
    so a window stays valid.
    """

    io_size = MAX_PUT_PAGE

    def __init__(self, sas_url: str, size: int, *, verify: str | bool = True,
                 secrets: Iterable[str | None] = (), name: str = "disk") -> None:
        self._client = _blob(sas_url, verify)
        self._size = size
        self._secrets = (*secrets, sas_url.partition("?")[2] or None)
        self.name = name
        self._window = _Window()
        self._ends: list[tuple[int, int]] | None = None
        #: bytes actually downloaded, and the GETs that did it
        self.bytes_fetched = 0
        self.gets = 0
        self._lock = threading.Lock()

    @property
    def size(self) -> int:
        return self._size

    def extents(self) -> list[Extent]:
        with azure_errors(f"listing the page ranges of {self.name}", self._secrets):
            ranges = [(int(r["start"]), int(r["end"]) + 1) for r in self._client.get_page_ranges()[0]]
        out: list[Extent] = []
        for start, stop in sorted(ranges):
            end = min(stop, self._size)
            if start >= end:
                continue
            if out and out[-1].end >= start:
                last = out.pop()
                out.append(Extent(last.offset, max(last.end, end) - last.offset))
            else:
                out.append(Extent(start, end - start))
        with self._lock:
            self._ends = [(e.offset, e.end) for e in out]
        return out

    def _allocated_end(self, offset: int) -> int:
        """End of the allocated range holding ``offset``; ``offset`` itself when it is in a hole."""
        if self._ends is None:
            self.extents()
        assert self._ends is not None
        i = bisect.bisect_right(self._ends, (offset, self._size + 1)) - 1
        if i >= 0 and self._ends[i][0] <= offset < self._ends[i][1]:
            return self._ends[i][1]
        return offset

    def read(self, offset: int, length: int) -> bytes:
        length = max(0, min(length, self._size - offset))
        if length == 0:
            return b""
        w = self._window
        if w.start <= offset and offset + length <= w.start + len(w.data):
            return w.data[offset - w.start : offset - w.start + length]
        end = max(offset + length, min(offset + MAX_PUT_PAGE, self._allocated_end(offset)))
        with azure_errors(f"reading {self.name}", self._secrets):
            data = bytes(self._client.download_blob(offset=offset, length=end - offset).readall())
        with self._lock:
            self.bytes_fetched += len(data)
            self.gets += 1
        w.start, w.data = offset, data
        return data[:length]
