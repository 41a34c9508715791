"""Bring a replica disk up to date by chunk digests: read the source, write only what differs.

The replica's previous digest map (one fixed-size digest per chunk, XXH3-128, its algorithm named
in the map's header: ``diskio.digest.encode_map``) says what it holds. A map in an earlier algorithm
(tagged BLAKE3, or bare BLAKE2b from before the header) is still compared in its own algorithm, once; a
map that cannot be read is ignored.
With no usable map, every non-zero chunk is written into a fresh sparse file. When the source can say
which areas changed since the replica's last sync (CBT, a dirty bitmap, EBS changed blocks), only the
chunks they touch are read; the others keep their digest. Work runs in batches on a
thread, and ``on_progress`` is awaited between batches: that is where the activity heartbeats
and where a cancel lands. A batch can take longer than a heartbeat timeout (64 EBS blocks are 64
round trips, on a loaded host), so while one runs the last progress is awaited again every
``keepalive`` seconds; nothing blocking runs on the event loop, which heartbeats every activity
of the worker.
"""

from __future__ import annotations

import asyncio
import functools
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from diskio import digest
from diskio.base import DiskSource, DiskTarget, Extent
from diskio.checkpoint import Checkpointer
from diskio.keepalive import HEARTBEAT_EVERY
from diskio.limiter import Stopped


@dataclass
class ReplicaSync:
    #: the new digest map, header included: store it as is and pass it back as ``previous``
    digests: bytes
    bytes_read: int = 0
    bytes_written: int = 0
    chunks_written: int = 0
    #: bytes read from the source again below the resume point, to hash what an earlier attempt wrote
    #: into a target that cannot be read back yet (``_Sync.replay``)
    bytes_reread: int = 0
    #: chunks an earlier attempt wrote below the resume point (not written again)
    chunks_resumed: int = 0


def _allocated(extents: list[Extent], size: int, chunk: int) -> list[bool]:
    marks = [False] * ((size + chunk - 1) // chunk)
    for e in extents:
        for i in range(e.offset // chunk, min(len(marks), (e.end + chunk - 1) // chunk)):
            marks[i] = True
    return marks


class _Sync:
    def __init__(self, src: DiskSource, dst: DiskTarget, previous: bytes | None, chunk: int, digest_size: int,
                 changed: list[Extent] | None = None):
        self.src, self.dst, self.chunk, self.ds = src, dst, chunk, digest_size
        self.count = (src.size + chunk - 1) // chunk
        known = digest.decode_map(previous, self.count, digest_size)
        self.previous = known[1] if known else None
        self.hash = digest.short_hasher(digest.ALGORITHM, digest_size)
        # a legacy map is compared in its own algorithm (one extra hash per chunk, on one sync)
        legacy = known is not None and known[0] != digest.ALGORITHM
        self.old_hash = digest.short_hasher(known[0], digest_size) if known and legacy else self.hash
        self.out = bytearray(self.count * digest_size)
        self.allocated = _allocated(src.extents(), src.size, chunk)
        # Without a previous map every chunk is a candidate; "changed" only narrows an incremental sync, and
        # only when the map is in today's algorithm: unchanged chunks keep their old digest as they are.
        self.candidate = (_allocated(changed, src.size, chunk)
                          if changed is not None and self.previous is not None and self.old_hash is self.hash
                          else None)
        self._zero: dict[tuple[int, bool], bytes] = {}
        self.result = ReplicaSync(digests=b"")
        #: set when the sync ends early (a cancel): the batch thread stops at its next chunk
        self.stop = threading.Event()

    def _check(self) -> None:
        if self.stop.is_set():
            raise Stopped("the replica sync was stopped")

    def zero_digest(self, length: int, old: bool = False) -> bytes:
        key = (length, old)
        if key not in self._zero:
            self._zero[key] = (self.old_hash if old else self.hash)(bytes(length))
        return self._zero[key]

    def recompute(self, start: int, stop: int) -> None:
        """Digests of chunks an earlier attempt already brought across, read back from the replica."""
        for i in range(start, stop):
            self._check()
            offset = i * self.chunk
            length = min(self.chunk, self.src.size - offset)
            self.out[i * self.ds:(i + 1) * self.ds] = self.hash(self.dst.read(offset, length))

    def replay(self, start: int, stop: int) -> None:
        """Chunks an earlier attempt brought across into a target that can't be read back until it is
        complete (a pending EBS snapshot): their digests from the source, which that attempt read them
        from, and the chunks it wrote, told apart by the same comparison; the target counts them
        (``DiskTarget.resumed``). Nothing is written."""
        self.batch(start, stop, write=False)

    def batch(self, start: int, stop: int, *, write: bool = True) -> None:
        for i in range(start, stop):
            self._check()
            if self.candidate is not None and not self.candidate[i]:
                assert self.previous is not None
                self.out[i * self.ds:(i + 1) * self.ds] = self.previous[i * self.ds:(i + 1) * self.ds]
                continue
            offset = i * self.chunk
            length = min(self.chunk, self.src.size - offset)
            data = self.src.read(offset, length) if self.allocated[i] else None
            if data is not None:
                if write:
                    self.result.bytes_read += len(data)
                else:
                    self.result.bytes_reread += len(data)
            found = self.hash(data) if data else self.zero_digest(length)
            zero = found == self.zero_digest(length)
            self.out[i * self.ds:(i + 1) * self.ds] = found
            if self.previous is None:
                if zero:
                    continue  # a fresh sparse file already reads as zeros
            else:
                if self.old_hash is not self.hash:
                    found = self.old_hash(data) if data else self.zero_digest(length, old=True)
                if self.previous[i * self.ds:(i + 1) * self.ds] == found:
                    continue
            if not write:
                self.dst.resumed(offset, length)
                self.result.chunks_resumed += 1
                continue
            if zero:
                self.dst.write_zeroes(offset, length)
            else:
                assert data is not None
                self.dst.write(offset, data)
            self.result.bytes_written += length
            self.result.chunks_written += 1

async def sync_replica(
    src: DiskSource,
    dst: DiskTarget,
    previous: bytes | None,
    *,
    chunk_size: int,
    digest_size: int,
    on_progress: Callable[[int, int], Awaitable[None]],
    bandwidth_limit: int | None = None,
    batch_chunks: int = 64,
    resume_from: int = 0,
    changed: list[Extent] | None = None,
    durable: Checkpointer | None = None,
    keepalive: float = HEARTBEAT_EVERY,
) -> ReplicaSync:
    """``previous`` None (or a map that ``diskio.digest.decode_map`` refuses) means a full sync into a
    fresh, empty ``dst``.

    ``changed``: the areas the source reports changed since ``previous`` was taken (None: unknown,
    every allocated chunk is read and compared).

    ``resume_from`` (bytes) continues an attempt of the same sync that stopped there: the chunks
    below it are not written again, only hashed: from the replica, or, where it can't be read back
    before it is complete, from the source (``bytes_reread``).

    ``durable`` keeps the prefix done in a checkpoint file after every batch, before
    ``on_progress`` reports it; the caller reads it back into ``resume_from`` on a retry.

    ``keepalive``: seconds between two reports of the same progress while a batch (or the final
    flush) runs.
    """
    # In a thread: ``src.extents()`` may run ``qemu-img map``, which would hold up the event loop.
    sync = await asyncio.to_thread(_Sync, src, dst, previous, chunk_size, digest_size, changed)
    first = min(sync.count, resume_from // chunk_size)
    # the prefix known to be across: what a report made while a batch runs claims
    done = min(src.size, first * chunk_size)

    async def still(work: Callable[[], None]) -> None:
        """``work`` in a thread, ``done`` reported again meanwhile (a heartbeat of what is already done)."""
        await _in_thread(sync, work, lambda: on_progress(done, src.size), keepalive)

    if bandwidth_limit:
        # Batches of about a quarter second of the cap: progress (the heartbeat that carries a
        # cancel) keeps coming, and the pause after a batch is short.
        batch_chunks = max(1, min(batch_chunks, bandwidth_limit // 4 // chunk_size))
    if durable is not None:
        await durable.begin(dst, [(0, min(src.size, first * chunk_size))])
    rehash = sync.recompute if dst.readable else sync.replay
    for start in range(0, first, batch_chunks * 4):
        end = min(first, start + batch_chunks * 4)
        await still(functools.partial(rehash, start, end))
        await on_progress(min(src.size, end * chunk_size), src.size)
    started = time.monotonic()
    for start in range(first, sync.count, batch_chunks):
        stop = min(sync.count, start + batch_chunks)
        await still(functools.partial(sync.batch, start, stop))
        if durable is not None:
            await durable.offer([(0, min(src.size, stop * chunk_size))])
        done = min(src.size, stop * chunk_size)
        await on_progress(done, src.size)
        if bandwidth_limit:
            # Pace on bytes read from the source, the cost a source endpoint feels.
            ahead = sync.result.bytes_read / bandwidth_limit - (time.monotonic() - started)
            if ahead > 0:
                await asyncio.sleep(ahead)
    # Completing a snapshot (EBS) is a round trip or two, on a host that may be slow to make them.
    await still(dst.flush)
    if durable is not None:
        await durable.finish()
    sync.result.digests = digest.encode_map(bytes(sync.out), digest_size)
    return sync.result


async def _in_thread(sync: _Sync, work: Callable[[], None], report: Callable[[], Awaitable[None]],
                     every: float) -> None:
    """Run ``work`` (a batch) in a thread, awaiting ``report()`` every ``every`` seconds until it ends.

    On a cancel (or a report that fails), the thread is stopped at its next chunk and waited for:
    returning while it still writes would let the caller close the replica under it.
    """
    running = asyncio.ensure_future(asyncio.to_thread(work))
    try:
        while not running.done():
            # ``wait``, not ``wait_for``: a timeout must not cancel the batch
            await asyncio.wait({running}, timeout=every)
            if not running.done():
                await report()
    except BaseException:
        sync.stop.set()
        await asyncio.wait({running})
        if not running.cancelled():
            running.exception()  # retrieved (``Stopped``, most likely): the cancel is what propagates
        raise
    running.result()
