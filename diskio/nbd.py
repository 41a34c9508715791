"""A minimal blocking NBD client: fixed-newstyle handshake, NBD_OPT_GO, simple replies.

Enough to read and write images served by ``qemu-nbd`` or ``nbdkit`` over a Unix socket.
One client is one connection; use one per thread (``diskio.qemu`` does).
"""

from __future__ import annotations

import contextlib
import socket
import struct

NBDMAGIC = b"NBDMAGIC"
IHAVEOPT = 0x49484156454F5054
OPT_REPLY_MAGIC = 0x3E889045565A9
REQUEST_MAGIC = 0x25609513
SIMPLE_REPLY_MAGIC = 0x67446698

FLAG_FIXED_NEWSTYLE = 1 << 0
FLAG_NO_ZEROES = 1 << 1
OPT_GO = 7
REP_ACK = 1
REP_INFO = 3
INFO_EXPORT = 0

CMD_READ = 0
CMD_WRITE = 1
CMD_DISC = 2
CMD_FLUSH = 3
CMD_WRITE_ZEROES = 6

TFLAG_READ_ONLY = 1 << 1
TFLAG_SEND_FLUSH = 1 << 2
TFLAG_SEND_WRITE_ZEROES = 1 << 6


class NbdError(OSError):
    """The server refused a request or broke the protocol."""


class NbdClient:
    """One NBD connection to ``export`` on the Unix socket ``path``."""

    def __init__(self, path: str, export: str = "") -> None:
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._sock.connect(path)
        self._cookie = 0
        try:
            self.size, self.flags = self._handshake(export.encode())
        except BaseException:
            self._sock.close()
            raise

    # -- plumbing ------------------------------------------------------------------------
    def _recv_into(self, view: memoryview) -> None:
        got = 0
        while got < len(view):
            n = self._sock.recv_into(view[got:])
            if n == 0:
                raise NbdError("NBD server closed the connection")
            got += n

    def _recv(self, n: int) -> bytes:
        buf = bytearray(n)
        self._recv_into(memoryview(buf))
        return bytes(buf)

    def _handshake(self, export: bytes) -> tuple[int, int]:
        if self._recv(8) != NBDMAGIC or struct.unpack(">Q", self._recv(8))[0] != IHAVEOPT:
            raise NbdError("not a fixed-newstyle NBD server")
        (server_flags,) = struct.unpack(">H", self._recv(2))
        if not server_flags & FLAG_FIXED_NEWSTYLE:
            raise NbdError("NBD server lacks fixed newstyle negotiation")
        self._sock.sendall(struct.pack(">I", FLAG_FIXED_NEWSTYLE | (server_flags & FLAG_NO_ZEROES)))
        data = struct.pack(">I", len(export)) + export + struct.pack(">H", 0)
        self._sock.sendall(struct.pack(">QII", IHAVEOPT, OPT_GO, len(data)) + data)
        size = flags = -1
        while True:
            magic, _opt, rtype, length = struct.unpack(">QIII", self._recv(20))
            payload = self._recv(length)
            if magic != OPT_REPLY_MAGIC:
                raise NbdError("bad NBD option reply")
            if rtype & 0x80000000:
                raise NbdError(f"NBD server refused the export: {payload[4:].decode(errors='replace')}")
            if rtype == REP_INFO and struct.unpack(">H", payload[:2])[0] == INFO_EXPORT:
                size, flags = struct.unpack(">QH", payload[2:12])
            elif rtype == REP_ACK:
                break
        if size < 0:
            raise NbdError("NBD server sent no export size")
        return size, flags

    def _request(self, cmd: int, offset: int, length: int, payload: memoryview | None = None) -> int:
        self._cookie += 1
        header = struct.pack(">IHHQQI", REQUEST_MAGIC, 0, cmd, self._cookie, offset, length)
        self._sock.sendall(header)
        if payload is not None:
            self._sock.sendall(payload)
        return self._cookie

    def _reply(self, cookie: int, into: memoryview | None = None) -> None:
        magic, error, handle = struct.unpack(">IIQ", self._recv(16))
        if magic != SIMPLE_REPLY_MAGIC or handle != cookie:
            raise NbdError("bad NBD reply")
        if error:
            raise NbdError(error, f"NBD request failed with error {error}")
        if into is not None:
            self._recv_into(into)

    # -- commands ------------------------------------------------------------------------
    def pread_into(self, offset: int, view: memoryview) -> None:
        """Read ``len(view)`` bytes at ``offset`` (requests of at most 32 MiB each)."""
        step = 32 * 1024 * 1024
        for pos in range(0, len(view), step):
            part = view[pos : pos + step]
            self._reply(self._request(CMD_READ, offset + pos, len(part)), part)

    def pwrite(self, offset: int, view: memoryview) -> None:
        step = 32 * 1024 * 1024
        for pos in range(0, len(view), step):
            part = view[pos : pos + step]
            self._reply(self._request(CMD_WRITE, offset + pos, len(part), part))

    def write_zeroes(self, offset: int, length: int) -> bool:
        """Zero a range without sending data; ``False`` when the server does not offer it."""
        if not self.flags & TFLAG_SEND_WRITE_ZEROES:
            return False
        step = 1 << 30
        for pos in range(0, length, step):
            self._reply(self._request(CMD_WRITE_ZEROES, offset + pos, min(step, length - pos)))
        return True

    def flush(self) -> None:
        if self.flags & TFLAG_SEND_FLUSH:
            self._reply(self._request(CMD_FLUSH, 0, 0))

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._request(CMD_DISC, 0, 0)
        self._sock.close()
