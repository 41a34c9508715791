"""HTTP range source against a real HTTP server on a loopback port."""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from core.errors import AuthenticationFailed, ConnectionFailed, ProviderTransient
from diskio.base import Extent
from diskio.copier import copy_disk
from diskio.http import HttpRangeSource
from diskio.local import LocalFileTarget, RawFileSource

MiB = 1024 * 1024
DiskFactory = Callable[..., Path]
SameBytes = Callable[[Path, Path], bool]


class DiskServer(ThreadingHTTPServer):
    """Serves one file with HEAD and single-range GET, like a datastore or blob endpoint."""

    daemon_threads = True

    def __init__(self, path: Path) -> None:
        super().__init__(("127.0.0.1", 0), RangeHandler)
        self.path = path
        self.fail_next = 0  # answer this many GETs with 503 first
        self.token = "secret"
        self.rotate = False  # a new token after each range: one that expires during a long read
        self.ranges_served = 0
        self.lock = threading.Lock()


class RangeHandler(BaseHTTPRequestHandler):
    server: DiskServer

    def log_message(self, format: str, *args: object) -> None:
        pass

    def _authorised(self) -> bool:
        if self.headers.get("Authorization") != f"Bearer {self.server.token}":
            self.send_response(401)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return False
        return True

    def do_HEAD(self) -> None:
        if self._authorised():
            self.send_response(200)
            self.send_header("Content-Length", str(self.server.path.stat().st_size))
            self.end_headers()

    def do_GET(self) -> None:
        if not self._authorised():
            return
        with self.server.lock:
            fail = self.server.fail_next > 0
            self.server.fail_next -= fail
        if fail:
            self.send_response(503)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        m = re.fullmatch(r"bytes=(\d+)-(\d+)", self.headers.get("Range", ""))
        assert m, "the source always asks for one range"
        start, end = int(m.group(1)), int(m.group(2))
        with open(self.server.path, "rb") as f:
            f.seek(start)
            body = f.read(end - start + 1)
        with self.server.lock:
            self.server.ranges_served += 1
            if self.server.rotate:
                self.server.token = f"secret-{self.server.ranges_served}"
        self.send_response(206)
        self.send_header("Content-Range", f"bytes {start}-{end}/{self.server.path.stat().st_size}")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture
def serve() -> Iterator[Callable[[Path], DiskServer]]:
    servers: list[DiskServer] = []

    def start(path: Path) -> DiskServer:
        server = DiskServer(path)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def url_of(server: DiskServer) -> str:
    return f"http://127.0.0.1:{server.server_address[1]}/disk.raw?sig=do-not-log"


async def test_http_source_with_a_block_map_copies_only_mapped_ranges(
    disk: DiskFactory, tmp_path: Path, same_bytes: SameBytes, serve: Callable[[Path], DiskServer]
) -> None:
    src = disk(runs=[(MiB, 3 * MiB), (40 * MiB, 2 * MiB)])
    server = serve(src)
    server.fail_next = 2  # transient errors are retried
    extents = RawFileSource(src).extents()  # what CBT or a blob page list would give
    source = HttpRangeSource(
        url_of(server), extents=extents, headers={"Authorization": "Bearer secret"}, backoff=0
    )
    assert source.size == 64 * MiB  # from HEAD
    target = LocalFileTarget(tmp_path / "dst.raw", source.size)
    result = await copy_disk(source, target, chunk_size=MiB, lanes=3)
    source.close()
    target.close()
    assert same_bytes(src, tmp_path / "dst.raw")
    assert result.bytes_read == sum(e.length for e in extents)
    assert server.ranges_served == result.chunks_copied


async def test_http_source_without_a_map_reads_all_and_skips_zero_chunks(
    disk: DiskFactory, tmp_path: Path, same_bytes: SameBytes, serve: Callable[[Path], DiskServer]
) -> None:
    src = disk(size=16 * MiB, runs=[(0, MiB)])
    server = serve(src)
    source = HttpRangeSource(url_of(server), headers={"Authorization": "Bearer secret"})
    assert source.extents() == [Extent(0, 16 * MiB)]
    target = LocalFileTarget(tmp_path / "dst.raw", source.size)
    result = await copy_disk(source, target, chunk_size=MiB, lanes=2)
    source.close()
    target.close()
    assert same_bytes(src, tmp_path / "dst.raw")
    assert result.bytes_written == MiB and result.chunks_zero == 15


def test_bad_credentials_fail_fast_without_leaking_the_url_query(
    disk: DiskFactory, serve: Callable[[Path], DiskServer]
) -> None:
    server = serve(disk(size=MiB))
    with pytest.raises(AuthenticationFailed) as info:
        HttpRangeSource(url_of(server), headers={"Authorization": "Bearer wrong"})
    assert "do-not-log" not in str(info.value)


async def test_auth_is_asked_before_each_range_so_a_renewed_token_is_used(
    disk: DiskFactory, tmp_path: Path, same_bytes: SameBytes, serve: Callable[[Path], DiskServer]
) -> None:
    src = disk(size=4 * MiB, runs=[(0, 4 * MiB)])
    server = serve(src)
    server.rotate = True
    # What a session's get_token does: the identity service's current token, not the one of the first call.
    source = HttpRangeSource(url_of(server), size=4 * MiB, auth=lambda: {"Authorization": f"Bearer {server.token}"})
    target = LocalFileTarget(tmp_path / "dst.raw", source.size)
    await copy_disk(source, target, chunk_size=MiB, lanes=1)  # one lane: each token is used before it rotates
    source.close()
    target.close()
    assert same_bytes(src, tmp_path / "dst.raw")
    assert server.ranges_served == 4
    # The same read with the first token only fails once that token is replaced.
    stale = HttpRangeSource(url_of(server), size=4 * MiB, headers={"Authorization": f"Bearer {server.token}"})
    stale.read(0, MiB)
    with pytest.raises(AuthenticationFailed):
        stale.read(MiB, MiB)
    stale.close()


def test_transient_answers_are_retried_with_backoff_then_reported(
    disk: DiskFactory, serve: Callable[[Path], DiskServer]
) -> None:
    src = disk(size=MiB, runs=[(0, MiB)])
    server = serve(src)
    auth = {"Authorization": "Bearer secret"}
    # Two 503s, then the range: the read succeeds on its third request.
    server.fail_next = 2
    source = HttpRangeSource(url_of(server), size=MiB, headers=auth, retries=2, backoff=0.01)
    assert source.read(0, 4096) == src.read_bytes()[:4096]
    assert (server.fail_next, server.ranges_served) == (0, 1)
    # More 503s than tries: the transient error names the status, and the URL without its query.
    server.fail_next = 10
    with pytest.raises(ProviderTransient, match="HTTP 503") as info:
        source.read(0, 4096)
    assert "do-not-log" not in str(info.value)
    assert server.fail_next == 10 - 3, "retries=2 means three requests in all"
    source.close()
    # Nothing listens: a connection failure after the same tries.
    server.shutdown()
    server.server_close()
    gone = HttpRangeSource(url_of(server), size=MiB, headers=auth, retries=1, backoff=0.01)
    with pytest.raises(ConnectionFailed):
        gone.read(0, 4096)
    gone.close()
