"""A disk written as the body of one HTTP request: Glance's ``PUT /v2/images/{id}/file``, and any
endpoint that takes a whole object in one upload and cannot be written at an offset.

The copier drives it like any target, with one lane, so that writes arrive in offset order. The
target is new and reads as zeros (``zero_initialized``): the copier skips holes and zero chunks,
and the target sends zeros for each gap before the next write, and up to ``size`` at ``flush``,
so that the body is every byte of the source. ``flush`` ends the body and reads the answer.
Nothing can be resumed: a retry starts a new request (the copier discards the checkpoint of a
new target). What is sent is hashed with the hashlib algorithms given, to compare with the
checksum the endpoint computed on its side.

Like ``diskio.http``, the data path is the standard library's ``http.client``: each write goes
from the lane's buffer to the socket without a copy in Python.
"""

from __future__ import annotations

import hashlib
import http.client
import threading
import urllib.parse
from collections.abc import Iterable, Mapping

from core.errors import AuthenticationFailed, ConnectionFailed, ProviderTransient, TransferError
from diskio.base import DiskTarget
from diskio.http import tls_context

_ZEROS = memoryview(bytes(1024 * 1024))
_TRANSIENT_STATUS = {408, 429, 500, 502, 503, 504}


class HttpStreamTarget(DiskTarget):
    """``size`` bytes sent with ``method`` to ``url`` as one request body, in offset order."""

    zero_initialized = True

    def __init__(
        self,
        url: str,
        size: int,
        *,
        method: str = "PUT",
        headers: Mapping[str, str] | None = None,
        verify_tls: bool | str = True,
        timeout: float = 60.0,
        answer_timeout: float = 3600.0,
        hashes: Iterable[str] = (),
    ) -> None:
        self.url = url
        self._size = size
        self._method = method
        self._headers = dict(headers or {})
        self._verify_tls = verify_tls
        self._timeout = timeout
        self._answer_timeout = answer_timeout
        self._hashes = {name: hashlib.new(name, usedforsecurity=False) for name in hashes}
        self._conn: http.client.HTTPConnection | None = None
        self._sent = 0
        self._lock = threading.Lock()
        #: the endpoint's answer once ``flush`` has read it
        self.status: int | None = None

    @property
    def size(self) -> int:
        return self._size

    @property
    def bytes_sent(self) -> int:
        return self._sent

    def hexdigests(self) -> dict[str, str]:
        """Digests of every byte sent so far, by algorithm name."""
        return {name: h.hexdigest() for name, h in self._hashes.items()}

    def _safe_url(self) -> str:
        # never log query strings: they carry signatures and tokens
        return self.url.split("?", 1)[0]

    def _start(self) -> http.client.HTTPConnection:
        if self._conn is not None:
            return self._conn
        parts = urllib.parse.urlsplit(self.url)
        conn: http.client.HTTPConnection
        if parts.scheme == "https":
            conn = http.client.HTTPSConnection(parts.hostname or "", parts.port, timeout=self._timeout,
                                               context=tls_context(self._verify_tls))
        else:
            conn = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=self._timeout)
        self._conn = conn
        try:
            conn.putrequest(self._method, (parts.path or "/") + (f"?{parts.query}" if parts.query else ""),
                            skip_accept_encoding=True)
            for key, value in self._headers.items():
                conn.putheader(key, value)
            conn.putheader("Content-Length", str(self._size))
            conn.endheaders()
        except OSError as exc:
            raise ConnectionFailed(f"{self._safe_url()}: {type(exc).__name__}") from None
        return conn

    def _send(self, view: memoryview) -> None:
        conn = self._start()
        for h in self._hashes.values():
            h.update(view)
        try:
            conn.send(view)
        except OSError as exc:
            # The endpoint may have answered (and closed) before taking the whole body: say why.
            self._raise_answer(f"{type(exc).__name__} after {self._sent} bytes")
        self._sent += len(view)

    def _zeros_to(self, end: int) -> None:
        while self._sent < end:
            self._send(_ZEROS[: min(len(_ZEROS), end - self._sent)])

    def _check(self, offset: int, length: int) -> None:
        if offset < self._sent:
            raise TransferError(f"{self._safe_url()}: a write at {offset} arrived after {self._sent} bytes were "
                                "sent; a stream target takes its writes in order (one lane)")
        if offset + length > self._size:
            raise TransferError(f"{self._safe_url()}: a write at {offset}+{length} is past the end ({self._size})")

    def write(self, offset: int, data: bytes) -> None:
        self.write_view(offset, memoryview(data))

    def write_view(self, offset: int, view: memoryview) -> None:
        with self._lock:
            self._check(offset, len(view))
            self._zeros_to(offset)
            self._send(view)

    def write_zeroes(self, offset: int, length: int) -> None:
        with self._lock:
            self._check(offset, length)
            self._zeros_to(offset + length)

    def flush(self) -> None:
        """Send the zeros up to ``size``, end the body and check the answer (idempotent)."""
        with self._lock:
            if self.status is not None:
                if 200 <= self.status < 300:
                    return
                raise TransferError(f"{self._safe_url()}: the body was already refused with HTTP {self.status}")
            self._start()
            self._zeros_to(self._size)
            self._raise_answer()

    def _raise_answer(self, broken: str | None = None) -> None:
        """Read the endpoint's answer; raise unless it is a success (always raise when ``broken``)."""
        assert self._conn is not None
        what = self._safe_url()
        try:
            if self._conn.sock is not None:
                self._conn.sock.settimeout(self._answer_timeout)
            response = self._conn.getresponse()
            response.read()
        except (OSError, http.client.HTTPException) as exc:
            raise ConnectionFailed(f"{what}: {broken or type(exc).__name__}, and no answer") from None
        status = response.status
        if not 200 <= status < 300:
            self.status = status  # a refusal is final: a later flush raises it again
            if status in (401, 403):
                raise AuthenticationFailed(f"{what}: HTTP {status}")
            if status in _TRANSIENT_STATUS:
                raise ProviderTransient(f"{what}: HTTP {status}")
            raise TransferError(f"{what}: the body was refused with HTTP {status}")
        if broken:
            raise ConnectionFailed(f"{what}: {broken}, yet HTTP {status}")
        self.status = status

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None
