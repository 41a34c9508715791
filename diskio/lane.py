"""What one lane does with one chunk, in a worker thread.

Everything here is blocking and runs outside the event loop. The hot path is built from
calls that release the GIL or run at memcmp speed on large buffers: ``preadv``/``pwritev``
into preallocated buffers, ``hashlib`` (releases the GIL above 2 KiB), and
``bytearray.startswith`` against a zero buffer (a ``memcmp`` that stops at the first
non-zero byte, so random data costs almost nothing).
"""

from __future__ import annotations

import hashlib
import queue
import threading
from dataclasses import dataclass

from core.errors import IntegrityError, TransferError
from diskio.base import DiskSource, DiskTarget
from diskio.limiter import RateLimiter
from diskio.plan import Chunk

#: zero runs shorter than this are written rather than skipped (keeps writes large)
ZERO_RUN = 1024 * 1024


@dataclass
class Outcome:
    """What happened to one chunk."""

    chunk: Chunk
    sha: bytes | None  # None: a resumed chunk whose target cannot be read back
    zero: bool = False
    resumed: bool = False
    bytes_read: int = 0
    bytes_written: int = 0
    bytes_zero: int = 0
    bytes_verified: int = 0
    repairs: int = 0


class _Buffers:
    """Per-lane buffers, reused for every chunk, so memory is lanes x 2 x chunk size."""

    def __init__(self, size: int) -> None:
        self.data = bytearray(size)
        self.check = bytearray(size)


class ChunkMover:
    """Moves chunks from ``source`` to ``target``; safe to call from several threads."""

    def __init__(
        self,
        source: DiskSource,
        target: DiskTarget,
        *,
        chunk_size: int,
        block: int,
        verify: bool,
        limiter: RateLimiter | None,
    ) -> None:
        self.source = source
        self.target = target
        self.chunk_size = chunk_size
        self.verify = verify and target.readable
        self.limiter = limiter
        self.zero_run = max(ZERO_RUN // block * block, block)
        self._zeros = bytearray(chunk_size)
        self._zero_view = memoryview(self._zeros)
        self._zero_sha: dict[int, bytes] = {}
        self._lock = threading.Lock()
        self._pool: queue.SimpleQueue[_Buffers] = queue.SimpleQueue()

    # -- buffers -------------------------------------------------------------------------
    def _take(self) -> _Buffers:
        try:
            return self._pool.get_nowait()
        except queue.Empty:
            return _Buffers(self.chunk_size)

    def _is_zero(self, buf: bytearray, start: int, end: int) -> bool:
        return buf.startswith(self._zero_view[: end - start], start, end)

    def _sha_of_zeros(self, length: int) -> bytes:
        with self._lock:
            sha = self._zero_sha.get(length)
            if sha is None:
                sha = self._zero_sha[length] = hashlib.sha256(self._zero_view[:length]).digest()
            return sha

    # -- work ----------------------------------------------------------------------------
    def copy(self, chunk: Chunk) -> Outcome:
        """Read, hash, write (skipping zero runs) and, when verifying, read back and compare."""
        bufs = self._take()
        try:
            return self._copy(chunk, bufs)
        finally:
            self._pool.put(bufs)

    def rehash(self, chunk: Chunk) -> Outcome:
        """A chunk done by an earlier attempt: hash it from the target, never the source."""
        if not self.verify:
            return Outcome(chunk, None, resumed=True)
        bufs = self._take()
        try:
            view = memoryview(bufs.data)[: chunk.length]
            if self.target.readinto(chunk.offset, view) != chunk.length:
                raise TransferError(f"short read back from the target at {chunk.offset}")
            if self._is_zero(bufs.data, 0, chunk.length):
                sha = self._sha_of_zeros(chunk.length)
            else:
                sha = hashlib.sha256(view).digest()
            return Outcome(chunk, sha, resumed=True, bytes_verified=chunk.length)
        finally:
            self._pool.put(bufs)

    def _copy(self, chunk: Chunk, bufs: _Buffers) -> Outcome:
        n = chunk.length
        data = bufs.data
        view = memoryview(data)[:n]
        if self.limiter is not None:
            self.limiter.acquire(n)
        got = self.source.readinto(chunk.offset, view)
        if got != n:
            raise TransferError(f"short read from the source: {got} of {n} bytes at {chunk.offset}")
        out = Outcome(chunk, b"", bytes_read=n)
        if self._is_zero(data, 0, n):
            out.sha, out.zero, out.bytes_zero = self._sha_of_zeros(n), True, n
            if not self.target.zero_initialized:
                self.target.write_zeroes(chunk.offset, n)
            return out
        out.sha = hashlib.sha256(view).digest()
        runs = self._runs(data, n)
        out.bytes_written, out.bytes_zero = self._write(chunk, view, runs, rewrite=False)
        if self.verify:
            out.bytes_verified = n
            if not self._matches(chunk, data, bufs.check):
                # One repair: write the chunk again, zero runs included, and compare again.
                out.repairs = 1
                self._write(chunk, view, runs, rewrite=True)
                out.bytes_verified += n
                if not self._matches(chunk, data, bufs.check):
                    raise IntegrityError(
                        f"chunk at {chunk.offset} (+{n}) reads back different from its source "
                        f"sha256 {out.sha.hex()}, twice"
                    )
        return out

    def _runs(self, data: bytearray, n: int) -> list[tuple[int, int, bool]]:
        """Split ``data[:n]`` into maximal (start, end, is_zero) runs of ``zero_run`` blocks."""
        runs: list[tuple[int, int, bool]] = []
        step = self.zero_run
        for start in range(0, n, step):
            end = min(n, start + step)
            zero = self._is_zero(data, start, end)
            if runs and runs[-1][2] == zero:
                runs[-1] = (runs[-1][0], end, zero)
            else:
                runs.append((start, end, zero))
        return runs

    def _write(
        self, chunk: Chunk, view: memoryview, runs: list[tuple[int, int, bool]], *, rewrite: bool
    ) -> tuple[int, int]:
        written = zero = 0
        max_write = self.target.max_write
        for start, end, is_zero in runs:
            if is_zero:
                zero += end - start
                if rewrite or not self.target.zero_initialized:
                    self.target.write_zeroes(chunk.offset + start, end - start)
                continue
            for pos in range(start, end, max_write):
                stop = min(end, pos + max_write)
                self.target.write_view(chunk.offset + pos, view[pos:stop])
            written += end - start
        return written, zero

    def _matches(self, chunk: Chunk, data: bytearray, check: bytearray) -> bool:
        # Comparing the bytes read back with the bytes that were hashed is the same check as
        # comparing their SHA-256s, at memcmp cost instead of a second hash pass.
        n = chunk.length
        check_view = memoryview(check)[:n]
        if self.target.readinto(chunk.offset, check_view) != n:
            return False
        return data.startswith(check_view)
