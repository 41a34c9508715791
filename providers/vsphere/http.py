"""HTTP(S) Range reads of one file (an NFC lease device URL or a datastore ``/folder`` URL).

One keep-alive connection per thread (the disk engine reads from a thread pool). Every request
carries the vSphere session cookie; the number of body bytes received is counted in
``bytes_fetched`` so that callers (and tests) can see what really crossed the network.
"""

from __future__ import annotations

import http.client
import re
import ssl
import threading
from pathlib import Path
from urllib.parse import urlsplit

from core.errors import AuthenticationFailed, ConnectionFailed, NotFound, ProviderTransient, TransferError


class RangeNotSupported(TransferError):
    """The server answers Range requests with the whole file (e.g. a generated NFC stream)."""


_CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+|\*)")
_ATTEMPTS = 3


class HttpRangeReader:
    """Random access to a remote file by ``Range: bytes=a-b`` GETs."""

    def __init__(
        self,
        url: str,
        *,
        cookie: str | None = None,
        ssl_context: ssl.SSLContext | None = None,
        timeout: float = 120.0,
    ) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise TransferError(f"unsupported disk URL scheme in {parts.scheme}://{parts.netloc}")
        self.url = url
        self._https = parts.scheme == "https"
        self._netloc = parts.netloc
        self._target = parts.path + (f"?{parts.query}" if parts.query else "")
        self._headers = {"Cookie": cookie} if cookie else {}
        self._ssl = ssl_context
        self._timeout = timeout
        self._local = threading.local()
        self._lock = threading.Lock()
        self._conns: list[http.client.HTTPConnection] = []
        self.bytes_fetched = 0
        self.requests = 0
        self._size: int | None = None

    def __repr__(self) -> str:  # the URL path may hold a lease ticket: show the host only
        return f"HttpRangeReader({self._netloc})"

    @property
    def size(self) -> int:
        """File size, from the ``Content-Range`` of a one-byte read."""
        if self._size is None:
            self._get(0, 1)
        assert self._size is not None
        return self._size

    def read_at(self, offset: int, length: int) -> bytes:
        """Bytes ``[offset, offset+length)``; short only at the end of the file."""
        if length <= 0:
            return b""
        return self._get(offset, length)

    def _conn(self) -> http.client.HTTPConnection:
        conn: http.client.HTTPConnection | None = getattr(self._local, "conn", None)
        if conn is None:
            if self._https:
                conn = http.client.HTTPSConnection(self._netloc, timeout=self._timeout, context=self._ssl)
            else:
                conn = http.client.HTTPConnection(self._netloc, timeout=self._timeout)
            self._local.conn = conn
            with self._lock:
                self._conns.append(conn)
        return conn

    def _drop(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None

    def _get(self, offset: int, length: int) -> bytes:
        headers = dict(self._headers, Range=f"bytes={offset}-{offset + length - 1}")
        last: Exception | None = None
        for _ in range(_ATTEMPTS):
            conn = self._conn()
            try:
                conn.request("GET", self._target, headers=headers)
                resp = conn.getresponse()
                if resp.status == 200 and not (offset == 0 and (resp.length or 0) <= length and resp.length):
                    # Range ignored: don't pull a whole disk to answer one read.
                    self._drop()
                    raise RangeNotSupported(f"{self._netloc} does not serve Range reads of this disk")
                body = resp.read()
            except ssl.SSLCertVerificationError as exc:
                self._drop()
                raise ConnectionFailed(
                    f"the certificate of {self._netloc} is not trusted ({exc.verify_message})"
                ) from None
            except (OSError, http.client.HTTPException) as exc:
                self._drop()  # stale keep-alive or reset: reconnect and retry
                last = exc
                continue
            with self._lock:
                self.requests += 1
                self.bytes_fetched += len(body)
            return self._check(resp, body, offset, length)
        raise ConnectionFailed(f"reading disk data from {self._netloc} failed: {type(last).__name__}: {last}")

    def download(self, dest: Path, chunk: int = 4 * 1024 * 1024) -> Path:
        """Fetch the whole file into ``dest`` (resuming a ``.part`` file when Range works).

        For servers that stream a disk (no Range). A finished ``dest`` from an earlier attempt
        is reused, so a retried activity does not fetch it again.
        """
        if dest.exists():
            return dest
        part = dest.with_name(dest.name + ".part")
        done = part.stat().st_size if part.exists() else 0
        headers = dict(self._headers, **({"Range": f"bytes={done}-"} if done else {}))
        conn = self._conn()
        try:
            conn.request("GET", self._target, headers=headers)
            resp = conn.getresponse()
            if resp.status == 416 and done:  # the .part file already holds everything
                resp.read()
                part.rename(dest)
                return dest
            if resp.status not in (200, 206):
                self._check(resp, resp.read(), 0, 0)
                raise TransferError(f"{self._netloc} answered HTTP {resp.status} to a disk download")
            mode = "ab" if resp.status == 206 else "wb"  # 200: the server restarted from byte 0
            with open(part, mode) as f:
                while block := resp.read(chunk):
                    f.write(block)
                    with self._lock:
                        self.bytes_fetched += len(block)
            if resp.length not in (None, 0):
                raise TransferError(f"the download from {self._netloc} ended early")
        except (OSError, http.client.HTTPException) as exc:
            raise ConnectionFailed(f"downloading disk data from {self._netloc} failed: {exc}") from None
        finally:
            self._drop()
        part.rename(dest)
        return dest

    def _check(self, resp: http.client.HTTPResponse, body: bytes, offset: int, length: int) -> bytes:
        if resp.status == 416:  # range starts at or after the end of the file
            if self._size is None:
                self._size = 0
            return b""
        if resp.status in (401, 403):
            raise AuthenticationFailed(f"{self._netloc} refused the disk read (HTTP {resp.status})")
        if resp.status == 404:
            raise NotFound(f"the disk URL on {self._netloc} is gone (HTTP 404; lease expired?)")
        if resp.status >= 500:
            raise ProviderTransient(f"{self._netloc} answered HTTP {resp.status} to a disk read")
        if resp.status == 206:
            match = _CONTENT_RANGE.match(resp.getheader("Content-Range", ""))
            if not match or int(match.group(1)) != offset:
                raise TransferError(f"{self._netloc} answered a range read with a wrong Content-Range")
            if match.group(3) != "*":
                self._size = int(match.group(3))
            return body
        if resp.status == 200:  # the whole file, and it is no bigger than what was asked
            self._size = len(body)
            return body[offset : offset + length]
        raise TransferError(f"{self._netloc} answered HTTP {resp.status} to a disk read")

    def close(self) -> None:
        """Close every connection opened by any thread."""
        with self._lock:
            conns, self._conns = self._conns, []
        for conn in conns:
            conn.close()
