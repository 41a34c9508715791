"""Disk sources for vSphere: export leases kept alive, and the ``DiskSource`` over HTTP Range reads.

How bytes are read, and why:

* The data comes over HTTP with ``Range`` reads, either from an NFC export lease
  (``ExportSnapshot``/``ExportVm`` -> ``HttpNfcLease`` device URL, transport ``nfc``, the default)
  or from the datastore file of the snapshot's disk (``/folder/...``, transport ``datastore``).
* A sparse VMDK (streamOptimized as NFC serves it, or a hosted sparse disk) is decoded in
  place by ``vmdk.SparseVmdk``: grain tables once, then only the grains that cover a requested
  range. A flat disk (a VMFS ``-flat.vmdk`` behind its descriptor, or raw bytes) is read
  directly, guest offset = file offset.
* Which ranges to read comes from changed block tracking: ``QueryChangedDiskAreas`` with
  ``"*"`` (allocated areas) for a first copy, and with the previous copy's changeId for an
  incremental one. Without CBT the whole disk is read (a sparse VMDK still skips its holes).

Trade-off: decoding in place costs one range request per run of grains instead of one
sequential download, but nothing is staged on the worker and an incremental moves only the
grains of the changed areas. A real vCenter generates its NFC stream on the fly and may answer
Range requests with the whole stream: then the VMDK is downloaded once into the snapshot's
workdir (resuming a partial ``.part`` file where the server allows it) and decoded from there;
CBT still limits what is copied into the target, but the whole stream crossed the network.
Flat VMFS disks read through the ``datastore`` transport keep true range reads on real ESXi;
that transport reads the snapshot's base disk, so it needs a flat disk with no older snapshots
(delta disks are refused with a message pointing at ``nfc``).
VDDK/NBD(SSL) transports are not implemented.
"""

from __future__ import annotations

import contextlib
import http.client
import re
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

from pyVmomi import vim, vmodl

from core.errors import InvalidInput, ProviderError
from core.polling import poll_until
from diskio.base import DiskSource, Extent
from providers.vsphere.connection import properties
from providers.vsphere.files import FileSlice
from providers.vsphere.http import HttpRangeReader, RangeNotSupported
from providers.vsphere.vmdk import RangeReader, SparseVmdk, is_sparse_vmdk

_EXTENT_LINE = re.compile(r'^(RW|RDONLY)\s+(\d+)\s+(FLAT|VMFS)\s+"([^"]+)"(?:\s+(\d+))?\s*$', re.M)


class Lease:
    """An ``HttpNfcLease``, kept alive by a background thread until completed or aborted."""

    def __init__(self, si: vim.ServiceInstance, lease: Any, what: str, timeout: float = 300) -> None:
        self._si, self._lease, self._what = si, lease, what

        def failed(props: dict[str, Any]) -> ProviderError:
            err = props.get("error")
            return ProviderError(
                f"export lease for {what} failed: {getattr(err, 'localizedMessage', None) or props.get('state')}"
            )

        last: dict[str, Any] = {}

        def ready() -> dict[str, Any] | None:
            nonlocal last
            last = properties(si, lease, ["state", "error", "info"])
            if last.get("state") == vim.HttpNfcLease.State.error:
                raise failed(last)
            return last if last.get("state") == vim.HttpNfcLease.State.ready else None

        props = poll_until(time.monotonic() + timeout, 0.2, ready)
        if props is None:
            raise failed(last)
        info = props["info"]
        self.disk_urls: list[str] = [d.url for d in info.deviceUrl or [] if d.disk]
        self._interval = max(5.0, min(60.0, (info.leaseTimeout or 300) / 3))
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._keepalive, name=f"nfc-lease-{what}", daemon=True)
        self._thread.start()

    def _keepalive(self) -> None:
        # Without progress calls, vCenter times the lease out and the URLs stop working.
        while not self._stop.wait(self._interval):
            with contextlib.suppress(vmodl.MethodFault, OSError, http.client.HTTPException):
                self._lease.HttpNfcLeaseProgress(percent=50)

    def _end(self, call: Callable[[], Any]) -> None:
        if self._stop.is_set():
            return
        self._stop.set()
        self._thread.join(timeout=5)
        with contextlib.suppress(vmodl.MethodFault, OSError, http.client.HTTPException):
            call()

    def complete(self) -> None:
        """Release the lease (tolerates repeats)."""
        self._end(self._lease.HttpNfcLeaseComplete)

    def abort(self) -> None:
        """Release the lease after a failure (tolerates repeats)."""
        self._end(self._lease.HttpNfcLeaseAbort)


def lease_url(url: str, where: str) -> str:
    """Device URLs may name the host as ``*``: point them at the host we talk to."""
    parts = urlsplit(url)
    if parts.hostname in ("*", None):
        return urlunsplit((parts.scheme, where, parts.path, parts.query, ""))
    return url


def datastore_url(where: str, datacenter: str, file_name: str) -> str:
    """The ``/folder`` URL of a ``[datastore] path`` file."""
    from providers.vsphere.inventory import split_datastore_path

    datastore, path = split_datastore_path(file_name)
    return f"https://{where}/folder/{quote(path)}?dcPath={quote(datacenter)}&dsName={quote(datastore)}"


def _flat_extent(descriptor: str, url: str) -> tuple[str, int]:
    """For a descriptor with one FLAT/VMFS extent: the extent's URL and its byte offset."""
    extents = _EXTENT_LINE.findall(descriptor)
    if len(extents) != 1:
        raise InvalidInput(
            f"the datastore transport reads single-extent flat disks only (this descriptor has {len(extents)}"
            " FLAT/VMFS extents; a VM with older snapshots has delta disks): use the nfc transport"
        )
    _mode, _sectors, _kind, name, offset = extents[0]
    parts = urlsplit(url)
    path = parts.path.rsplit("/", 1)[0] + "/" + quote(name)
    return urlunsplit((parts.scheme, parts.netloc, path, parts.query, "")), int(offset or 0) * 512


class VsphereDiskSource(DiskSource):
    """Guest bytes of one snapshot disk, read by HTTP Range requests.

    ``extents`` (from CBT) bound what a copy reads; ``None`` means "no CBT": the sparse VMDK's
    allocated grains, or the whole disk.

    With ``changed_since`` set, ``extents()`` are the areas changed since that changeId, not
    the allocated ones: the copy must go onto the previous copy and leave everything outside
    the extents as it is (``diskio.copier.copy_disk(..., checkpoint=[])`` does that today,
    where ``checkpoint=None`` would zero the rest of a reused target).
    """

    def __init__(
        self,
        reader: HttpRangeReader,
        capacity: int,
        extents: list[Extent] | None,
        *,
        on_close: Callable[[], None] = lambda: None,
        open_reader: Callable[[str], HttpRangeReader] | None = None,
        spool: Path | None = None,
        changed_since: str | None = None,
    ) -> None:
        self.changed_since = changed_since
        self._readers: list[HttpRangeReader] = [reader]
        self._capacity = capacity
        self._on_close = on_close
        self._base = 0
        self._vmdk: SparseVmdk | None = None
        data: RangeReader = reader
        try:
            head = reader.read_at(0, 512)
        except RangeNotSupported:
            if spool is None:
                raise
            # A streamed export (real vCenter NFC): fetch it once into the workdir, read it there.
            local = reader.download(spool)
            data = FileSlice(str(local), 0, local.stat().st_size)
            head = data.read_at(0, 512)
        if is_sparse_vmdk(head):
            self._vmdk = SparseVmdk(data)
        elif head.startswith(b"# Disk DescriptorFile"):
            if open_reader is None or not isinstance(data, HttpRangeReader):
                raise InvalidInput("a VMDK descriptor was served where disk data was expected")
            text = data.read_at(0, min(data.size, 64 * 1024)).decode("utf-8", "replace")
            url, self._base = _flat_extent(text, data.url)
            data = open_reader(url)
            self._readers.append(data)
        self._data = data
        if extents is None:
            extents = self._vmdk.extents() if self._vmdk is not None else [Extent(0, capacity)]
        self._extents = [
            Extent(e.offset, min(e.end, capacity) - e.offset) for e in extents if e.offset < capacity
        ]

    @property
    def size(self) -> int:
        return self._capacity

    @property
    def incremental(self) -> bool:
        """Whether ``extents()`` are changed areas (to copy onto the previous copy), not allocated ones."""
        return self.changed_since is not None

    @property
    def bytes_fetched(self) -> int:
        """Bytes received over HTTP so far (headers and tables included)."""
        return sum(r.bytes_fetched for r in self._readers)

    def extents(self) -> list[Extent]:
        return list(self._extents)

    def read(self, offset: int, length: int) -> bytes:
        length = max(0, min(length, self._capacity - offset))
        if length == 0:
            return b""
        if self._vmdk is not None:
            data = self._vmdk.read(offset, length)
        else:
            data = self._data.read_at(self._base + offset, length)
        return data.ljust(length, b"\0")  # a backing file may be shorter than the disk

    def close(self) -> None:
        for reader in self._readers:
            reader.close()
        self._on_close()
