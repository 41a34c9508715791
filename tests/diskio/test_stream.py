"""The stream target (one request body, in order) against a real HTTP server on a loopback port."""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from core.errors import AuthenticationFailed, TransferError
from diskio.copier import copy_disk
from diskio.local import RawFileSource
from diskio.stream import HttpStreamTarget

MiB = 1024 * 1024
DiskFactory = Callable[..., Path]


class UploadServer(ThreadingHTTPServer):
    """Takes PUT bodies, like Glance's image data call, and answers ``status`` once the body is in."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), UploadHandler)
        self.bodies: list[bytes] = []
        self.status = 204
        self.token = "secret"


class UploadHandler(BaseHTTPRequestHandler):
    server: UploadServer

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_PUT(self) -> None:
        length = int(self.headers["Content-Length"])
        body = bytearray()
        while len(body) < length:
            piece = self.rfile.read(min(MiB, length - len(body)))
            if not piece:
                break
            body += piece
        self.server.bodies.append(bytes(body))
        status = self.server.status if self.headers.get("X-Auth-Token") == self.server.token else 401
        self.send_response(status)
        self.send_header("Content-Length", "0")
        self.end_headers()


@pytest.fixture
def server() -> Iterator[UploadServer]:
    srv = UploadServer()
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield srv
    srv.shutdown()
    srv.server_close()


def url_of(server: UploadServer) -> str:
    return f"http://127.0.0.1:{server.server_address[1]}/v2/images/abc/file?sig=do-not-log"


async def test_a_sparse_file_arrives_whole_in_one_body(disk: DiskFactory, server: UploadServer) -> None:
    # Holes, a zero run inside data and an unaligned tail: the body must still be every byte.
    path = disk(size=9 * MiB + 1000, runs=[(MiB, 2 * MiB), (6 * MiB, MiB), (9 * MiB, 1000)])
    with open(path, "r+b") as f:
        f.seek(2 * MiB)
        f.write(bytes(MiB))
    source = RawFileSource(path)
    target = HttpStreamTarget(url_of(server), source.size, headers={"X-Auth-Token": "secret"}, hashes=("md5",))
    try:
        result = await copy_disk(source, target, chunk_size=MiB, lanes=1)
    finally:
        source.close()
        target.close()
    data = path.read_bytes()
    assert server.bodies == [data]
    assert target.hexdigests() == {"md5": hashlib.md5(data, usedforsecurity=False).hexdigest()}
    assert target.status == 204
    assert result.bytes_skipped_zero > 0  # zero runs were not read as data, yet they were sent


def test_writes_must_come_in_order(server: UploadServer) -> None:
    target = HttpStreamTarget(url_of(server), 2 * MiB, headers={"X-Auth-Token": "secret"})
    try:
        target.write(MiB, b"x" * MiB)
        with pytest.raises(TransferError, match="one lane"):
            target.write(0, b"y" * MiB)
    finally:
        target.close()


@pytest.mark.parametrize(("status", "token", "error"), [
    (413, "secret", TransferError), (204, "wrong", AuthenticationFailed)])
async def test_a_refused_body_fails_with_its_status_and_no_url_query(
        disk: DiskFactory, server: UploadServer, status: int, token: str, error: type[Exception]) -> None:
    server.status = status
    source = RawFileSource(disk(size=2 * MiB, runs=[(0, MiB)]))
    target = HttpStreamTarget(url_of(server), source.size, headers={"X-Auth-Token": token})
    try:
        with pytest.raises(error) as info:
            await copy_disk(source, target, chunk_size=MiB, lanes=1)
        assert str(413 if status == 413 else 401) in str(info.value)
        assert "do-not-log" not in str(info.value)
        # A refusal is final: flushing again does not turn it into a success.
        with pytest.raises(TransferError):
            target.flush()
    finally:
        source.close()
        target.close()
