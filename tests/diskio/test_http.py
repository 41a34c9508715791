"""HTTP range source against a real HTTP server on a loopback port.

The copies run twice where both data paths can move them (the ``lane`` fixture): through the native lane
(``diskio.native``, plain HTTP into a raw file) and through the Python steps (what HTTPS takes).
"""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from core.errors import AuthenticationFailed, ConnectionFailed, IntegrityError, ProviderTransient
from diskio import native
from diskio.base import Extent
from diskio.copier import CopyResult, copy_disk
from diskio.http import HttpRangeSource
from diskio.lane import ChunkMover
from diskio.limiter import Stopped
from diskio.local import LOCAL_IO_SIZE, LocalFileTarget, RawFileSource
from diskio.plan import Chunk

MiB = 1024 * 1024
KiB = 1024
AUTH = {"Authorization": "Bearer secret"}
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
        self.ranges: list[tuple[int, int]] = []  # every range asked for, in order
        self.bytes_served = 0
        self.connections = 0
        self.cut_next = 0  # send this many bodies only up to ``cut_at`` bytes, then close the connection
        self.cut_at = 0
        self.stall_next = 0  # send this many bodies only up to ``cut_at`` bytes, then send nothing more
        self.stalled = threading.Event()  # set at the end of the test: a stalled body's handler returns
        self.lock = threading.Lock()


class RangeHandler(BaseHTTPRequestHandler):
    server: DiskServer
    protocol_version = "HTTP/1.1"  # kept-alive connections, as nginx or a blob store gives

    def setup(self) -> None:
        super().setup()
        with self.server.lock:
            self.server.connections += 1

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
            self.server.ranges.append((start, end))
            if self.server.rotate:
                self.server.token = f"secret-{self.server.ranges_served}"
            cut = self.server.cut_next > 0
            self.server.cut_next -= cut
            stall = self.server.stall_next > 0
            self.server.stall_next -= stall
        self.send_response(206)
        self.send_header("Content-Range", f"bytes {start}-{end}/{self.server.path.stat().st_size}")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if stall:  # a peer that stops sending mid-body and keeps the connection open
            self.wfile.write(body[: self.server.cut_at])
            self.wfile.flush()
            self.server.stalled.wait(30)
            self.close_connection = True
            return
        if cut:
            body = body[: self.server.cut_at]
            self.close_connection = True  # a connection lost mid-body: part of it, then EOF
        try:
            self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True  # the client dropped a body it no longer wanted
            return
        with self.server.lock:
            self.server.bytes_served += len(body)


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
        server.stalled.set()
        server.shutdown()
        server.server_close()


@pytest.fixture(params=["native", "python"])
def lane(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Which data path moves the copy: the native lane, built by the install (it fails here when it is
    not), or the Python steps, as for HTTPS."""
    if request.param == "native":
        assert native.LANE is not None, "diskio/_lane.so is not built: `make` builds it (hatch_build.py)"
    else:
        monkeypatch.setattr(native, "LANE", None)
    return str(request.param)


def python_steps(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(native, "LANE", None)


def url_of(server: DiskServer) -> str:
    return f"http://127.0.0.1:{server.server_address[1]}/disk.raw?sig=do-not-log"


async def test_http_source_with_a_block_map_copies_only_mapped_ranges(
    disk: DiskFactory, tmp_path: Path, same_bytes: SameBytes, serve: Callable[[Path], DiskServer], lane: str
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
    disk: DiskFactory, tmp_path: Path, same_bytes: SameBytes, serve: Callable[[Path], DiskServer], lane: str
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
    disk: DiskFactory, tmp_path: Path, same_bytes: SameBytes, serve: Callable[[Path], DiskServer], lane: str
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


class StepsTarget(LocalFileTarget):
    """A local file that records the size of every write: the steps a chunk was moved in."""

    def __init__(self, path: Path, size: int) -> None:
        super().__init__(path, size)
        self.writes: list[int] = []

    def write_view(self, offset: int, view: memoryview) -> None:
        self.writes.append(len(view))
        super().write_view(offset, view)


async def copy_mapped(server: DiskServer, extents: list[Extent], target: LocalFileTarget) -> CopyResult:
    """The 64 MiB disk ``server`` serves, its ``extents`` copied into ``target`` in 4 MiB chunks on two lanes."""
    source = HttpRangeSource(url_of(server), size=64 * MiB, extents=extents, headers=AUTH)
    result = await copy_disk(source, target, chunk_size=4 * MiB, lanes=2)
    source.close()
    target.close()
    return result


async def test_each_chunk_is_one_request_whose_body_is_moved_in_cache_sized_steps(
    disk: DiskFactory, tmp_path: Path, same_bytes: SameBytes, serve: Callable[[Path], DiskServer],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    python_steps(monkeypatch)  # the steps of the Python path; the native lane's are below
    src = disk(runs=[(MiB, 10 * MiB), (40 * MiB, 3 * MiB)])
    server = serve(src)
    target = StepsTarget(tmp_path / "dst.raw", 64 * MiB)
    result = await copy_mapped(server, RawFileSource(src).extents(), target)
    assert same_bytes(src, tmp_path / "dst.raw")
    # Each step is hashed, written and read back while it is in the CPU cache (the local target's step) ...
    assert max(target.writes) == LOCAL_IO_SIZE
    assert len(target.writes) == 13 * MiB // LOCAL_IO_SIZE
    # ... and yet a chunk of many steps costs one request (a round trip on a real network), and each
    # allocated byte crosses the network once.
    assert result.chunks_copied == 4
    assert server.ranges_served == result.chunks_copied
    assert server.bytes_served == result.bytes_read == 13 * MiB


@pytest.mark.parametrize("fault", ["cut", "stall"])
async def test_a_body_cut_or_stalled_mid_way_is_asked_again_from_the_step_it_broke_in(
    disk: DiskFactory, tmp_path: Path, same_bytes: SameBytes, serve: Callable[[Path], DiskServer], lane: str,
    fault: str,
) -> None:
    src = disk(size=8 * MiB, runs=[(0, 8 * MiB)])
    server = serve(src)
    # The first body stops in its third 256 KiB step: its connection closed (cut), or left open with nothing
    # more sent (stall), which the read's timeout ends.
    server.cut_at = 600 * KiB
    if fault == "cut":
        server.cut_next = 1
    else:
        server.stall_next = 1
    source = HttpRangeSource(url_of(server), size=8 * MiB, headers=AUTH, backoff=0,
                             timeout=0.3 if fault == "stall" else 60.0)
    target = LocalFileTarget(tmp_path / "dst.raw", source.size)
    result = await copy_disk(source, target, chunk_size=4 * MiB, lanes=1)
    source.close()
    target.close()
    assert same_bytes(src, tmp_path / "dst.raw")
    assert result.bytes_read == 8 * MiB
    # The retry asks for the rest of the chunk from the step that failed, on a new connection.
    assert server.ranges == [(0, 4 * MiB - 1), (512 * KiB, 4 * MiB - 1), (4 * MiB, 8 * MiB - 1)]
    assert server.connections == 2


def test_a_stopped_chunk_leaves_no_half_read_connection_for_the_next(
    disk: DiskFactory, tmp_path: Path, serve: Callable[[Path], DiskServer], lane: str
) -> None:
    src = disk(size=8 * MiB, runs=[(0, 8 * MiB)])
    data = src.read_bytes()
    server = serve(src)
    source = HttpRangeSource(url_of(server), size=8 * MiB, headers=AUTH)
    stop = threading.Event()

    class StopOnFirstWrite(LocalFileTarget):
        """A cancel arrives while the chunk is one step in (the Python steps) or one slice (the native lane)."""

        armed = True

        def write_view(self, offset: int, view: memoryview) -> None:
            super().write_view(offset, view)
            if self.armed:
                stop.set()

        def reached(self, end: int) -> None:
            super().reached(end)
            if self.armed:
                stop.set()

    target = StopOnFirstWrite(tmp_path / "dst.raw", source.size)
    mover = ChunkMover(source, target, chunk_size=4 * MiB, block=512, verify=True, limiter=None, stop=stop)
    with pytest.raises(Stopped):
        mover.copy(Chunk(0, 0, 4 * MiB))
    moved = native.SLICE if lane == "native" else LOCAL_IO_SIZE  # stopped after the first step or slice
    assert target.read(0, moved) == data[:moved]
    # The same thread (lane) goes on with another chunk: its bytes come from a new request on a
    # new connection, never from the rest of the abandoned body.
    stop.clear()
    target.armed = False
    out = mover.copy(Chunk(1, 4 * MiB, 4 * MiB))
    assert out.bytes_written == out.bytes_verified == 4 * MiB
    assert target.read(4 * MiB, 4 * MiB) == data[4 * MiB :]
    # A read outside any announced span, and one of the abandoned chunk again: the right bytes.
    assert source.read(MiB + 5, 4096) == data[MiB + 5 : MiB + 5 + 4096]
    source.begin_range(0, 4 * MiB)
    assert source.read(0, 256 * KiB) == data[: 256 * KiB]
    source.close()
    target.close()
    assert server.ranges == [(0, 4 * MiB - 1), (4 * MiB, 8 * MiB - 1), (MiB + 5, MiB + 5 + 4095), (0, 4 * MiB - 1)]
    assert server.connections == 2


def test_reads_off_the_open_body_ask_for_the_rest_of_the_span(
    disk: DiskFactory, serve: Callable[[Path], DiskServer]
) -> None:
    src = disk(size=4 * MiB, runs=[(0, 4 * MiB)])
    data = src.read_bytes()
    server = serve(src)
    source = HttpRangeSource(url_of(server), size=4 * MiB, headers=AUTH)
    source.begin_range(0, 2 * MiB)
    step = 256 * KiB
    assert source.read(0, step) == data[:step]
    # A step skipped (the body is elsewhere): the rest of the span from here, on a new connection
    assert source.read(2 * step, step) == data[2 * step : 3 * step]
    for pos in range(3 * step, 2 * MiB, step):  # then read on in that body
        assert source.read(pos, step) == data[pos : pos + step]
    # The span read to its end: its connection is kept for the next request
    assert source.read(3 * MiB, step) == data[3 * MiB : 3 * MiB + step]
    source.close()
    assert server.ranges == [(0, 2 * MiB - 1), (2 * step, 2 * MiB - 1), (3 * MiB, 3 * MiB + step - 1)]
    assert server.connections == 2


class NativeSteps(StepsTarget):
    """A local file that records how far the native lane says it wrote, besides the Python steps' writes."""

    def __init__(self, path: Path, size: int) -> None:
        super().__init__(path, size)
        self.reach: list[int] = []

    def reached(self, end: int) -> None:
        self.reach.append(end)
        super().reached(end)


async def test_the_native_lane_moves_each_chunk_from_one_request_with_the_python_steps_digest(
    disk: DiskFactory, tmp_path: Path, same_bytes: SameBytes, serve: Callable[[Path], DiskServer],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert native.LANE is not None, "diskio/_lane.so is not built: `make` builds it (hatch_build.py)"
    src = disk(runs=[(MiB, 10 * MiB), (40 * MiB, 3 * MiB)], small_writes=6)
    server = serve(src)
    extents = RawFileSource(src).extents()
    target = NativeSteps(tmp_path / "dst.raw", 64 * MiB)
    result = await copy_mapped(server, extents, target)
    assert same_bytes(src, tmp_path / "dst.raw")
    # every byte went through the C loop: no step was written from Python, and it vouched for the writes
    assert target.writes == [] and target.reach
    assert result.bytes_written == result.bytes_verified == sum(e.length for e in extents) - result.bytes_skipped_zero
    assert server.ranges_served == result.chunks_copied
    assert server.bytes_served == result.bytes_read
    # the chunk and disk digests are the Python steps' own: a checkpoint or replica map made by one path
    # is understood by the other
    python_steps(monkeypatch)
    other = StepsTarget(tmp_path / "python.raw", 64 * MiB)
    by_python = await copy_mapped(server, extents, other)
    assert other.writes and by_python.digest == result.digest
    assert (by_python.bytes_written, by_python.bytes_skipped_zero) == (result.bytes_written, result.bytes_skipped_zero)


class MisdirectingTarget(LocalFileTarget):
    """A new file whose native-lane writes land at its end, not where they were aimed: Linux's ``pwrite``
    on a descriptor opened ``O_APPEND`` appends whatever the offset (pwrite(2), BUGS), a misdirected write.
    The file is first made as long as the disk, so the stray bytes land past the disk's end."""

    def __init__(self, path: Path, size: int, chunks: int, python_too: bool = False) -> None:
        super().__init__(path, size)
        os.truncate(path, size)
        self.astray = os.open(path, os.O_RDWR | os.O_APPEND)
        self.chunks, self.python_too = chunks, python_too

    def raw_file(self) -> int | None:
        if self.chunks > 0:
            self.chunks -= 1
            return self.astray
        return super().raw_file()

    def write_view(self, offset: int, view: memoryview) -> None:
        if self.python_too:
            os.pwrite(self.astray, view, offset)
        else:
            super().write_view(offset, view)

    def close(self) -> None:
        super().close()
        os.close(self.astray)


async def test_a_write_the_native_lane_finds_elsewhere_is_written_again(
    disk: DiskFactory, tmp_path: Path, same_bytes: SameBytes, serve: Callable[[Path], DiskServer]
) -> None:
    src = disk(size=16 * MiB, runs=[(2 * MiB, 4 * MiB)])
    server = serve(src)
    source = HttpRangeSource(url_of(server), size=16 * MiB, extents=[Extent(2 * MiB, 4 * MiB)], headers=AUTH)
    dst = tmp_path / "dst.raw"
    target = MisdirectingTarget(dst, source.size, chunks=1)
    result = await copy_disk(source, target, chunk_size=MiB, lanes=1)
    source.close()
    target.close()
    # each step of the first chunk read back as zeros where it was aimed, and was written there again
    assert result.repairs == MiB // LOCAL_IO_SIZE
    assert dst.stat().st_size == 17 * MiB  # the stray copies, past the disk's end
    os.truncate(dst, 16 * MiB)
    assert same_bytes(src, dst)


async def test_a_step_that_stays_wrong_after_the_native_lane_is_reported_not_passed(
    disk: DiskFactory, tmp_path: Path, serve: Callable[[Path], DiskServer]
) -> None:
    src = disk(size=16 * MiB, runs=[(2 * MiB, 4 * MiB)])
    server = serve(src)
    source = HttpRangeSource(url_of(server), size=16 * MiB, extents=[Extent(2 * MiB, 4 * MiB)], headers=AUTH)
    target = MisdirectingTarget(tmp_path / "dst.raw", source.size, chunks=1, python_too=True)
    with pytest.raises(IntegrityError, match=str(2 * MiB)):
        await copy_disk(source, target, chunk_size=MiB, lanes=1)
    source.close()
    target.close()
