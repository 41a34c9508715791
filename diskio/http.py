"""A source read over HTTP(S) with Range requests: datastore HTTP, export-lease URLs, Glance, GCS.

Providers give the URL, the headers that authenticate it and, where their API has one,
the block map (vSphere CBT, for instance); without a map the whole disk is read and zero
chunks are still skipped on the target.

The data path is the standard library's ``http.client``, one kept-alive connection per lane:
``HTTPResponse.readinto`` lets the kernel copy each body straight into the lane's buffer. A chunk
is one request (round trips are what a remote source pays for), its body received in 256 KiB
steps: each step is hashed, written and read back while it is in the CPU cache, where whole 8 MiB
chunks went to RAM between every pass.
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
from diskio.base import DiskSource, Extent, RawBody

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

    Each chunk the copier announces (``begin_range``) is one ``Range`` request whose body its steps
    read in turn; any other read is a request of its own. A request is retried ``retries`` times
    with backoff on network errors (a body cut short included: the retry asks for the rest) and
    transient statuses (408, 429, 5xx); redirects are followed. ``size`` defaults
    to the ``Content-Length`` of a ``HEAD``. ``auth``, if given, is asked for more headers before
    each request: a token that expires during a long read is renewed (Keystone's, for Glance).
    """

    #: cache-sized steps, one request per chunk all the same: ``begin_range`` opens the chunk's
    #: request and each step reads on in its body, so it is hashed, written and read back while in L2
    io_size = 256 * 1024

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
        # The first try runs bare: a read is a 256 KiB step, and a tenacity call costs ~9 us a step.
        try:
            return call()
        except _Transient as exc:
            failed: list[_Transient] = [exc]

        def again() -> T:
            if failed:
                raise failed.pop()  # the policy's first try is the one that failed: same waits and count
            return call()

        policy = Retrying(stop=stop_after_attempt(self._retries + 1),
                          wait=wait_exponential(multiplier=self._backoff, min=0, max=3600),
                          retry=retry_if_exception_type(_Transient), reraise=True)
        try:
            return policy(again)
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

    def begin_range(self, offset: int, length: int) -> None:
        """The steps that follow on this thread read ``[offset, offset + length)``: the first opens one
        ranged GET for the whole span and the next ones read on in its body (see ``readinto``)."""
        if getattr(self._local, "body", None) is not None:
            self._drop()  # a span abandoned mid-body (an error, a stop): its connection is never reused
        end = min(offset + length, self._size)
        self._local.span = (offset, end) if end > offset else None

    def raw_body(self, offset: int, length: int, head: memoryview) -> RawBody | None:
        """The span ``begin_range`` announced, from ``offset``, on this thread's connection when it is plain
        HTTP (a TLS socket's bytes are not the body's). ``http.client`` parses the status and headers;
        what its reader holds of the body already goes into ``head``."""
        span: tuple[int, int] | None = getattr(self._local, "span", None)
        if span is None or not span[0] <= offset < span[1] or not self.url.startswith("http:"):
            return None
        end = span[1]  # no body is open: begin_range dropped any
        body = self._retried(lambda: self._open(offset, end))
        conn = self._local.conn
        if isinstance(conn.sock, ssl.SSLSocket) or body.chunked:  # a redirect to HTTPS; a body not sent as is
            return None  # readinto reads on in this body
        try:
            # peek returns what the reader holds, or does one read of the socket when it holds nothing
            have = min(len(body.fp.peek()), len(head), end - offset)
            got = body.readinto(head[:have]) if have else 0
        except (OSError, http.client.HTTPException):
            self._drop()  # readinto asks again, with its retries
            return None
        return RawBody(conn.sock.fileno(), got, self._timeout, lambda at: self._raw_done(body, at))

    def _raw_done(self, body: http.client.HTTPResponse, at: int) -> None:
        if at == self._local.end:  # read whole by the lane: http.client never saw those bytes
            self._local.body = self._local.span = None
            body.close()  # the connection is kept, ready for the next request
            if body.will_close:
                self._drop()
        else:
            self._drop()

    def readinto(self, offset: int, view: memoryview) -> int:
        """Read into ``view`` from the open body when it is at ``offset``, else with a new request: for
        the rest of the span ``begin_range`` announced when ``offset`` is in it, else for ``view``.

        A failed read (a connection lost mid-body, a transient status) is retried with a new request
        from ``offset``: the bytes already read and returned stay good.
        """
        n = max(0, min(len(view), self._size - offset))
        if n == 0:
            return 0
        return self._retried(lambda: self._read_body(offset, view[:n]))

    def _read_body(self, offset: int, view: memoryview) -> int:
        n, local = len(view), self._local
        body: http.client.HTTPResponse | None = getattr(local, "body", None)
        if body is None or local.at != offset or offset + n > local.end:
            if body is not None:
                self._drop()  # never a new request on a connection whose body is half read
            end = offset + n
            span: tuple[int, int] | None = getattr(local, "span", None)
            if span is not None and span[0] <= offset and end <= span[1]:
                end = span[1]  # the rest of the span in one request, read on by the next steps
            else:
                local.span = None
            body = self._open(offset, end)
        try:
            got = 0
            while got < n:
                r = body.readinto(view[got:])
                if not r:
                    break
                got += r
        except (OSError, http.client.HTTPException) as exc:
            self._drop()
            raise _Transient(ConnectionFailed(f"{self._safe_url()}: {type(exc).__name__}")) from None
        if got != n:
            # The body's length was checked when it opened: it ended early, the connection was cut.
            self._drop()
            raise _Transient(ConnectionFailed(f"{self._safe_url()}: the body of a range ended early"))
        local.at = offset + n
        if local.at == local.end:
            self._finish(body)
        return n

    def _finish(self, body: http.client.HTTPResponse) -> None:
        """A body read to its end: the connection is kept for the next request unless it will close."""
        self._local.body = self._local.span = None
        try:
            extra = body.read(1)  # b"" for a whole Content-Length body; ends a chunked one
        except (OSError, http.client.HTTPException):
            extra = b""
            self._drop()
        if extra:
            self._drop()
            raise TransferError(f"{self._safe_url()}: a range returned more bytes than asked")
        if body.will_close:
            self._drop()

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
        """Close this thread's connection, and with it any body still open on it."""
        self._local.body = None
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None

    def _open(self, offset: int, end: int) -> http.client.HTTPResponse:
        """One ranged GET for ``[offset, end)``, its headers checked; the body is this thread's open body."""
        n = end - offset
        # identity: the raw body is the disk's bytes
        headers = {"Range": f"bytes={offset}-{end - 1}", "Accept-Encoding": "identity"}
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
            except (OSError, http.client.HTTPException) as exc:
                self._drop()
                raise _Transient(ConnectionFailed(f"{self._safe_url()}: {type(exc).__name__}")) from None
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
            if response.length is not None and response.length != n:
                self._drop()
                raise TransferError(f"{self._safe_url()}: range {offset}+{n} returned another length")
            self._local.body, self._local.at, self._local.end = response, offset, end
            return response
        raise TransferError(f"{self._safe_url()}: too many redirects")

    def close(self) -> None:
        with self._lock:
            clients, self._clients = self._clients, []
            conns, self._conns = self._conns, []
        for client in clients:
            client.close()
        for conn in conns:
            conn.close()
