"""Images in any qemu format, through ``qemu-img map`` and a private ``qemu-nbd`` server.

``QemuNbdSource`` reads a qcow2/vmdk/vpc/... image as guest-visible bytes, with extents from
``qemu-img map``; ``QemuNbdTarget`` writes into a new image of any writable format. Both
talk to ``qemu-nbd`` on a Unix socket in a private temporary directory, one NBD
connection per thread.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import threading
import time
from pathlib import Path

from core.children import die_with_parent
from core.errors import TransferError
from core.polling import poll_until
from diskio.base import DiskSource, DiskTarget, Extent
from diskio.nbd import NbdClient

#: one NBD request per MiB: large enough for the socket round trip, small enough for the cache
NBD_IO_SIZE = 1024 * 1024


def qemu_img_map(path: str | Path, fmt: str) -> list[Extent]:
    """Extents holding data, from ``qemu-img map --output=json`` (``-f`` always given)."""
    out = subprocess.run(
        ["qemu-img", "map", "--output=json", "-f", fmt, str(path)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    extents: list[Extent] = []
    for entry in json.loads(out):
        # "zero" means reads as zeros whatever "data" says (fixed VHD reports both).
        if entry.get("data") and not entry.get("zero"):
            add_extent(extents, int(entry["start"]), int(entry["length"]))
    return extents


def add_extent(extents: list[Extent], start: int, length: int) -> None:
    """Append an area of ``qemu-img map``'s output, joined to the last one when they touch."""
    if extents and extents[-1].end == start:
        extents[-1] = Extent(extents[-1].offset, extents[-1].length + length)
    else:
        extents.append(Extent(start, length))


def qemu_img_info(path: str | Path, fmt: str) -> dict[str, object]:
    out = subprocess.run(
        ["qemu-img", "info", "--output=json", "-f", fmt, str(path)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    info: dict[str, object] = json.loads(out)
    return info


class QemuNbdServer:
    """A ``qemu-nbd`` child serving one image on a private Unix socket until ``close``."""

    def __init__(self, path: str | Path, fmt: str, *, read_only: bool, timeout: float = 20.0) -> None:
        self._dir = tempfile.mkdtemp(prefix="sterna-nbd-")
        self.socket = os.path.join(self._dir, "nbd.sock")
        args = ["qemu-nbd", "--format", fmt, "--socket", self.socket, "--shared", "0", "--persistent"]
        args += ["--read-only"] if read_only else ["--cache", "writeback", "--discard", "unmap"]
        # stderr goes to a file: a pipe nobody reads could fill up and stall the server
        self._log = open(os.path.join(self._dir, "qemu-nbd.log"), "w+b")  # noqa: SIM115
        self._proc = subprocess.Popen(
            [*args, str(path)], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=self._log,
            # --persistent: it would outlive a killed worker otherwise. die_with_parent makes two syscalls
            # through a pre-resolved libc and takes no lock, so forking from a threaded worker is safe.
            preexec_fn=die_with_parent,  # noqa: PLW1509
        )
        self._local = threading.local()
        self._clients: list[NbdClient] = []
        self._lock = threading.Lock()
        size = poll_until(time.monotonic() + timeout, 0.02, self._size_once_listening)
        if size is None or size < 0:
            self._log.seek(0)
            err = self._log.read().decode(errors="replace")
            self.close()
            raise TransferError(f"qemu-nbd did not start for {path}: {err.strip()}")
        self.size = size

    def _size_once_listening(self) -> int | None:
        """The export's size once qemu-nbd accepts connections; -1 if it exited, ``None`` while it starts."""
        try:
            return self.client().size
        except OSError:
            # Not listening yet (no socket, refused), or a server that is exiting on a bad image and
            # drops the connection mid-handshake (reset, closed): its exit status tells which.
            return -1 if self._proc.poll() is not None else None

    def client(self) -> NbdClient:
        """This thread's connection (opened on first use)."""
        client: NbdClient | None = getattr(self._local, "client", None)
        if client is None:
            client = NbdClient(self.socket)
            self._local.client = client
            with self._lock:
                self._clients.append(client)
        return client

    def close(self) -> None:
        """Disconnect every client and stop the server; qemu-nbd flushes the image on exit."""
        with self._lock:
            clients, self._clients = self._clients, []
        for client in clients:
            client.close()
        if self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        self._log.close()
        shutil.rmtree(self._dir, ignore_errors=True)


class QemuNbdSource(DiskSource):
    """Guest-visible bytes of an image in qemu format ``fmt``, read-only."""

    io_size = NBD_IO_SIZE

    def __init__(self, path: str | Path, fmt: str) -> None:
        self.path, self.fmt = Path(path), fmt
        self._server = QemuNbdServer(path, fmt, read_only=True)

    @property
    def size(self) -> int:
        return self._server.size

    def extents(self) -> list[Extent]:
        return qemu_img_map(self.path, self.fmt)

    def read(self, offset: int, length: int) -> bytes:
        buf = bytearray(max(0, min(length, self.size - offset)))
        self._server.client().pread_into(offset, memoryview(buf))
        return bytes(buf)

    def readinto(self, offset: int, view: memoryview) -> int:
        n = max(0, min(len(view), self.size - offset))
        self._server.client().pread_into(offset, view[:n])
        return n

    def close(self) -> None:
        self._server.close()


class QemuNbdTarget(DiskTarget):
    """A new image of ``size`` bytes in format ``fmt`` (qcow2, vmdk, ...), written over NBD.

    The image is created with ``qemu-img create`` unless it exists (resume). A new image
    reads as zeros everywhere, so zero chunks are skipped.
    """

    granularity = 512
    alignment = 512
    max_write = 32 * 1024 * 1024
    io_size = NBD_IO_SIZE

    def __init__(
        self, path: str | Path, size: int, fmt: str = "qcow2", *, options: list[str] | None = None
    ) -> None:
        self.path, self.fmt, self._size = Path(path), fmt, size
        self.zero_initialized = not self.path.exists()
        if self.zero_initialized:
            opts = ["-o", ",".join(options)] if options else []
            subprocess.run(
                ["qemu-img", "create", "-q", "-f", fmt, *opts, str(self.path), str(size)],
                check=True,
                capture_output=True,
                preexec_fn=die_with_parent,
            )
        self._server = QemuNbdServer(self.path, fmt, read_only=False)

    @property
    def size(self) -> int:
        return self._size

    def write(self, offset: int, data: bytes) -> None:
        self._server.client().pwrite(offset, memoryview(data))

    def write_view(self, offset: int, view: memoryview) -> None:
        self._server.client().pwrite(offset, view)

    def write_zeroes(self, offset: int, length: int) -> None:
        if not self._server.client().write_zeroes(offset, length):
            super().write_zeroes(offset, length)

    @property
    def readable(self) -> bool:
        return True

    def read(self, offset: int, length: int) -> bytes:
        buf = bytearray(max(0, min(length, self._size - offset)))
        self._server.client().pread_into(offset, memoryview(buf))
        return bytes(buf)

    def readinto(self, offset: int, view: memoryview) -> int:
        n = max(0, min(len(view), self._size - offset))
        self._server.client().pread_into(offset, view[:n])
        return n

    def flush(self) -> None:
        self._server.client().flush()

    def close(self) -> None:
        self._server.close()
