"""A source read over HTTP(S) with Range requests: datastore HTTP, export-lease URLs, Glance, GCS.

Providers give the URL, the headers that authenticate it and, where their API has one,
the block map (vSphere CBT, for instance); without a map the whole disk is read and zero
chunks are still skipped on the target.

The data path is the standard library's ``http.client``, one kept-alive connection per lane:
``HTTPResponse.readinto`` lets the kernel copy each body straight into the lane's buffer.
httpx (kept for the one ``HEAD``) parses bodies in Python in 64 KiB pieces and cost about
5 CPU-s per GiB on the bench machine, eight times a curl of the same ranges.
"""

from __future__ import annotations

import http.client
import ssl
import threading
import urllib.parse
from collections.abc import Callable, Mapping
from typing import TypeVar

import httpx
from tenacity import Retrying, retry_if_exception_type, stop_after_attempt, wait_exponential

from core.errors import AuthenticationFailed, ConnectionFailed, ProviderTransient, TransferError
from diskio.base import DiskSource, Extent

_TRANSIENT_STATUS = {408, 429, 500, 502, 503, 504}

T = TypeVar("T")


def tls_context(verify: bool | str = True) -> ssl.SSLContext:
    """Certificate checks as an endpoint's ``allow_untrusted``/``cafile`` ask: ``True`` (the system
    CAs), ``False`` (none) or the path of a CA bundle."""
    ctx = ssl.create_default_context(cafile=verify if isinstance(verify, str) else None)
    if verify is False:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    return ctx


class _Transient(Exception):
    """A failure worth retrying; ``final`` is what to raise when the retries are spent."""

    def __init__(self, final: Exception) -> None:
        super().__init__(str(final))
        self.final = final


class HttpRangeSource(DiskSource):
    """Guest-visible bytes of a raw disk served at ``url``; one HTTP connection per thread.

    Each read is one ``Range`` request, retried ``retries`` times with backoff on network
    errors and transient statuses (408, 429, 5xx); redirects are followed. ``size`` defaults
    to the ``Content-Length`` of a ``HEAD``. ``auth``, if given, is asked for more headers before
    each request: a token that expires during a long read is renewed (Keystone's, for Glance).
    """

    io_size = 0  # one request per chunk: round trips cost more than cache misses

    def __init__(
        self,
        url: str,
        *,
        size: int | None = None,
        extents: list[Extent] | None = None,
        headers: Mapping[str, str] | None = None,
        auth: Callable[[], Mapping[str, str]] | None = None,
        verify_tls: bool | str = True,
        timeout: float = 60.0,
        retries: int = 4,
        backoff: float = 0.5,
    ) -> None:
        self.url = url
        self._headers = dict(headers or {})
        self._auth = auth
        self._tls = tls_context(verify_tls)
        self._timeout = timeout
        self._retries = retries
        self._backoff = backoff
        self._local = threading.local()
        self._clients: list[httpx.Client] = []
        self._conns: list[http.client.HTTPConnection] = []
        self._lock = threading.Lock()
        self._size = size if size is not None else self._head_size()
        self._extents = extents

    def _client(self) -> httpx.Client:
        client: httpx.Client | None = getattr(self._local, "client", None)
        if client is None:
            client = httpx.Client(headers=self._headers, verify=self._tls, timeout=self._timeout)
            self._local.client = client
            with self._lock:
                self._clients.append(client)
        return client

    def _head_size(self) -> int:
        response = self._retrying(lambda: self._client().head(self.url, headers=self._auth_headers(),
                                                              follow_redirects=True))
        length = response.headers.get("content-length")
        if length is None:
            raise TransferError(f"{self._safe_url()} gives no Content-Length; pass the disk size")
        return int(length)

    def _auth_headers(self) -> Mapping[str, str]:
        return self._auth() if self._auth is not None else {}

    def _safe_url(self) -> str:
        # never log query strings: they carry signatures and tokens (SAS, signed URLs)
        return self.url.split("?", 1)[0]

    def _retried(self, call: Callable[[], T]) -> T:
        """``call`` again after a transient failure (``_Transient``), ``backoff`` doubling from one
        try to the next; once the tries are spent, the failure's ``final`` error is raised."""
        policy = Retrying(stop=stop_after_attempt(self._retries + 1),
                          wait=wait_exponential(multiplier=self._backoff, min=0, max=3600),
                          retry=retry_if_exception_type(_Transient), reraise=True)
        try:
            return policy(call)
        except _Transient as exc:
            raise exc.final from None

    def _retrying(self, call: Callable[[], httpx.Response]) -> httpx.Response:
        def once() -> httpx.Response:
            try:
                response = call()
            except httpx.TransportError as exc:
                raise _Transient(ConnectionFailed(f"{self._safe_url()}: {type(exc).__name__}")) from None
            if response.status_code in (401, 403):
                raise AuthenticationFailed(f"{self._safe_url()}: HTTP {response.status_code}")
            if response.status_code in _TRANSIENT_STATUS:
                raise _Transient(ProviderTransient(f"{self._safe_url()}: HTTP {response.status_code}"))
            return response

        return self._retried(once)

    @property
    def size(self) -> int:
        return self._size

    def extents(self) -> list[Extent]:
        return list(self._extents) if self._extents is not None else [Extent(0, self._size)]

    def read(self, offset: int, length: int) -> bytes:
        buf = bytearray(max(0, min(length, self._size - offset)))
        n = self.readinto(offset, memoryview(buf))
        return bytes(buf[:n])

    def readinto(self, offset: int, view: memoryview) -> int:
        n = max(0, min(len(view), self._size - offset))
        if n == 0:
            return 0
        # identity: the raw body is the disk's bytes (iter_raw does not decode)
        headers = {"Range": f"bytes={offset}-{offset + n - 1}", "Accept-Encoding": "identity"}
        return self._retried(lambda: self._get_into(headers, offset, view[:n]))

    def _conn(self, url: str) -> http.client.HTTPConnection:
        """This thread's kept-alive connection to ``url``'s host (a new one after a redirect)."""
        parts = urllib.parse.urlsplit(url)
        key = (parts.scheme, parts.netloc)
        conn: http.client.HTTPConnection | None = getattr(self._local, "conn", None)
        if conn is not None and getattr(self._local, "key", None) == key:
            return conn
        if conn is not None:
            conn.close()
        if parts.scheme == "https":
            conn = http.client.HTTPSConnection(parts.hostname or "", parts.port, timeout=self._timeout,
                                               context=self._tls)
        else:
            conn = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=self._timeout)
        self._local.conn, self._local.key = conn, key
        with self._lock:
            self._conns.append(conn)
        return conn

    def _drop(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None

    def _get_into(self, headers: dict[str, str], offset: int, view: memoryview) -> int:
        """One ranged GET whose body the kernel copies straight into ``view``."""
        n = len(view)
        url = self.url
        for _redirect in range(6):
            parts = urllib.parse.urlsplit(url)
            target = parts.path or "/"
            if parts.query:
                target += "?" + parts.query
            conn = self._conn(url)
            try:
                conn.request("GET", target, headers={**self._headers, **self._auth_headers(), **headers})
                response = conn.getresponse()
                status = response.status
                if status in (301, 302, 303, 307, 308) and response.getheader("location"):
                    url = urllib.parse.urljoin(url, response.getheader("location", ""))
                    self._drop()
                    continue
                if status in (401, 403):
                    self._drop()
                    raise AuthenticationFailed(f"{self._safe_url()}: HTTP {status}")
                if status in _TRANSIENT_STATUS:
                    self._drop()
                    raise _Transient(ProviderTransient(f"{self._safe_url()}: HTTP {status}"))
                whole = status == 200 and offset == 0 and n == self._size
                if status != 206 and not whole:
                    self._drop()
                    raise TransferError(f"{self._safe_url()}: range {offset}+{n} answered HTTP {status}")
                got = 0
                while got < n:
                    r = response.readinto(view[got:])
                    if not r:
                        break
                    got += r
                if got != n or response.read(1):
                    self._drop()
                    raise TransferError(f"{self._safe_url()}: range {offset}+{n} returned another length")
                if response.will_close:
                    self._drop()
                return n
            except (OSError, http.client.HTTPException) as exc:
                self._drop()
                raise _Transient(ConnectionFailed(f"{self._safe_url()}: {type(exc).__name__}")) from None
        raise TransferError(f"{self._safe_url()}: too many redirects")

    def close(self) -> None:
        with self._lock:
            clients, self._clients = self._clients, []
            conns, self._conns = self._conns, []
        for client in clients:
            client.close()
        for conn in conns:
            conn.close()
