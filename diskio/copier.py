"""The copier: moves the allocated bytes of a ``DiskSource`` to a ``DiskTarget``.

It reads only allocated extents, skips all-zero chunks, copies ``lanes`` chunks at a time
in worker threads with bounded memory (two buffers of one I/O step per lane, see
``diskio.lane``), records each chunk's digest (``diskio.digest``), checks written
chunks against the source's bytes when the target is readable, reports
a compact checkpoint after each chunk (and, given a ``diskio.checkpoint.Checkpointer``, keeps it
in a file that survives the worker), and resumes from such a checkpoint.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from core.errors import IntegrityError, TransferError
from diskio import digest
from diskio.base import DiskSource, DiskTarget
from diskio.checkpoint import Checkpointer
from diskio.keepalive import beating
from diskio.lane import ChunkMover, Outcome
from diskio.limiter import RateLimiter
from diskio.plan import Chunk, DiskDigest, align_extents, cut_chunks, target_block
from diskio.progress import TransferProgress
from diskio.ranges import Range, RangeSet, covers, merge, subtract, total

DEFAULT_CHUNK_SIZE = 8 * 1024 * 1024
DEFAULT_LANES = 4
#: seconds between two progress calls while the lanes are alive but no chunk completes
TICK = 1.0

ProgressCallback = Callable[[TransferProgress], Awaitable[None]]


@dataclass
class CopyResult:
    """What one ``copy_disk`` call did.

    ``digest`` is the per-disk digest (see ``diskio.plan.DiskDigest``); it is ``None`` when
    chunks done by an earlier attempt could not be hashed because the target cannot be read
    back. ``verified`` means every chunk written by this call was read back from the target
    and found byte-identical to the source bytes it hashed (chunks resumed from a checkpoint
    were checked the same way by the attempt that wrote them, and were hashed from the
    target for the digest).
    """

    bytes_total: int = 0
    bytes_read: int = 0
    bytes_written: int = 0
    bytes_skipped_zero: int = 0
    bytes_verified: int = 0
    chunks_total: int = 0
    chunks_copied: int = 0
    chunks_resumed: int = 0
    chunks_zero: int = 0
    repairs: int = 0
    digest: str | None = None
    verified: bool = False
    #: with ``final_check``: the per-disk digest recomputed from the target after ``flush``
    target_digest: str | None = None
    #: a checkpoint was given but the target is new (another host, a deleted scratch file):
    #: it was ignored and everything was copied
    checkpoint_discarded: bool = False


class _Run:
    """Bookkeeping of one call: done ranges, counters, digest."""

    def __init__(
        self, chunks: list[Chunk], size: int, work: list[Range], done_before: list[Range], *, keep_shas: bool
    ) -> None:
        # A chunk's span runs to the next chunk's start, so that done chunks and the holes
        # between them merge: the checkpoint is a prefix plus an island per lane, whatever
        # the number of extents.
        self._chunks = chunks
        self._size = size
        first = chunks[0].offset if chunks else size
        self.resumed = {c.index for c in chunks if covers(done_before, c.offset, c.length)}
        self.done = RangeSet([(0, first), *done_before])
        for c in chunks:
            if c.index in self.resumed:
                self._mark(c)
        self.result = CopyResult(bytes_total=total(work), chunks_total=len(chunks))
        # resumed chunks count as done from the first heartbeat on, before they are re-hashed
        self.bytes_done = sum(c.length for c in chunks if c.index in self.resumed)
        self.digest = DiskDigest()
        self.digest_complete = True
        # one digest a chunk, for the final check: 2 MiB per TiB of allocated data at most
        self.shas = bytearray(digest.SIZE * len(chunks)) if keep_shas else None

    def _mark(self, c: Chunk) -> None:
        end = self._chunks[c.index + 1].offset if c.index + 1 < len(self._chunks) else self._size
        self.done.add(c.offset, end - c.offset)

    def record(self, out: Outcome, log: TextIO | None) -> None:
        r, c = self.result, out.chunk
        r.bytes_read += out.bytes_read
        r.bytes_written += out.bytes_written
        r.bytes_skipped_zero += out.bytes_zero
        r.bytes_verified += out.bytes_verified
        r.repairs += out.repairs
        if out.resumed:
            r.chunks_resumed += 1
        else:
            r.chunks_copied += 1
            r.chunks_zero += out.zero
            self.bytes_done += c.length
            self._mark(c)
        if out.sha is None:
            self.digest_complete = False
        else:
            self.digest.add(c, out.sha)
            if self.shas is not None:
                self.shas[digest.SIZE * c.index : digest.SIZE * (c.index + 1)] = out.sha
            if log is not None:
                log.write(f"{c.offset} {c.length} {digest.tag(out.sha.hex())}{' zero' if out.zero else ''}\n")

    def progress(self) -> TransferProgress:
        return TransferProgress(self.bytes_done, self.result.bytes_total, self.done.ranges())


async def copy_disk(
    source: DiskSource,
    target: DiskTarget,
    *,
    checkpoint: list[tuple[int, int]] | None = None,
    on_progress: ProgressCallback | None = None,
    bandwidth_limit: int | None = None,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    lanes: int | None = None,
    verify: bool = True,
    final_check: bool = False,
    chunk_log: str | Path | None = None,
    durable: Checkpointer | None = None,
) -> CopyResult:
    """Copy the allocated bytes of ``source`` onto ``target``.

    ``checkpoint`` holds done ranges from an earlier attempt (as reported through
    ``on_progress``): chunks inside them are not read from the source again, unless the
    target is new (``zero_initialized``), e.g. a retry on another host whose scratch file
    does not exist: then the checkpoint is stale and everything is copied. ``on_progress``
    is awaited after every completed chunk, with merged done ranges; if it raises (e.g.
    ``asyncio.CancelledError``), nothing more is started, the lanes stop at their next I/O
    step (or bandwidth wait), and the error propagates. ``bandwidth_limit`` caps source reads in bytes per
    second for this transfer. ``chunk_log`` receives one line per chunk:
    ``offset length xxh3-128:<hex> [zero]`` (the algorithm is named on every line). While no
    chunk completes but the lanes are alive (moving bytes, or waiting for their bandwidth
    share), ``on_progress`` is awaited again every ``TICK`` seconds with the same progress: the
    caller heartbeats, and a cancel (which arrives only with a heartbeat response) gets in.

    ``lanes`` None takes the endpoints' preference when both state one (``pick_lanes``: 2 between
    local files), else ``DEFAULT_LANES``.

    ``verify`` reads every written step back and compares it with the bytes that were
    hashed. ``final_check`` also re-reads the whole target after ``flush`` and recomputes the
    per-disk digest from it (``CopyResult.target_digest``); chunks whose hash differs are
    copied again once, and an ``IntegrityError`` is raised if they still differ.

    ``durable`` keeps the done ranges in a checkpoint file as chunks complete, before
    ``on_progress`` reports them (so a recorded progress never runs ahead of the file); the
    caller reads it back on a retry and removes it once the step is done.
    """
    if target.size < source.size:
        raise TransferError(f"target holds {target.size} bytes, the source {source.size}")
    if lanes is None:
        lanes = pick_lanes(source, target)
    if lanes < 1:
        raise ValueError("lanes must be at least 1")
    block = target_block(target.alignment, target.granularity)
    chunk_size = max(block, chunk_size // block * block)
    loop = asyncio.get_running_loop()
    stop = threading.Event()
    pool = concurrent.futures.ThreadPoolExecutor(lanes, thread_name_prefix="diskio-lane")
    log = open(chunk_log, "a", encoding="ascii") if chunk_log is not None else None  # noqa: SIM115
    try:
        extents = await loop.run_in_executor(pool, source.extents)
        work = align_extents(extents, source.size, block)
        chunks = cut_chunks(work, chunk_size)
        stale = bool(checkpoint) and target.zero_initialized
        done_before = [] if stale else merge(checkpoint or [])
        if durable is not None:
            # Before the first write: a file that claims more (a stale one) is replaced now.
            await durable.begin(target, done_before)
        if checkpoint is None and not target.zero_initialized:
            # A reused target may hold old bytes in what are holes of the source.
            for off, length in subtract([(0, source.size)], work):
                await loop.run_in_executor(pool, target.write_zeroes, off, length)
        keep = final_check and target.readable
        run = _Run(chunks, source.size, work, done_before, keep_shas=keep)
        run.result.checkpoint_discarded = stale
        mover = ChunkMover(
            source,
            target,
            chunk_size=chunk_size,
            block=block,
            verify=verify,
            limiter=RateLimiter(bandwidth_limit) if bandwidth_limit else None,
            stop=stop,
        )
        await _drive(loop, pool, mover, chunks, run, lanes=lanes, log=log, on_progress=on_progress,
                     durable=durable)
        if not chunks and on_progress is not None:
            await on_progress(run.progress())
        await _flush(loop, pool, target, run.progress(), on_progress)
        if durable is not None:
            await durable.finish()
        if keep:
            run.result.target_digest = await _final_check(loop, pool, mover, chunks, run, lanes=lanes)
    finally:
        stop.set()
        await _stop(loop, pool)
        if log is not None:
            log.close()
    result = run.result
    result.verified = mover.verify
    result.digest = run.digest.hexdigest(len(chunks)) if run.digest_complete else None
    return result


def pick_lanes(source: DiskSource, target: DiskTarget) -> int:
    """The endpoints' lanes when both state a preference (the smaller), else ``DEFAULT_LANES``."""
    if source.lanes > 0 and target.lanes > 0:
        return min(source.lanes, target.lanes)
    return DEFAULT_LANES


async def _flush(
    loop: asyncio.AbstractEventLoop,
    pool: concurrent.futures.ThreadPoolExecutor,
    target: DiskTarget,
    last: TransferProgress,
    on_progress: ProgressCallback | None,
) -> None:
    """``target.flush``, reporting the last progress meanwhile: completing a remote object (an EBS
    snapshot, a streamed upload's answer) can outlast a heartbeat timeout."""
    flushing = loop.run_in_executor(pool, target.flush)
    if on_progress is None:
        await flushing
    else:
        await beating(lambda: on_progress(last), flushing)


async def _drive(
    loop: asyncio.AbstractEventLoop,
    pool: concurrent.futures.ThreadPoolExecutor,
    mover: ChunkMover,
    chunks: list[Chunk],
    run: _Run,
    *,
    lanes: int,
    log: TextIO | None,
    on_progress: ProgressCallback | None,
    durable: Checkpointer | None,
) -> None:
    todo = iter(chunks)
    inflight: set[asyncio.Future[Outcome]] = set()
    try:
        while True:
            while len(inflight) < lanes:
                chunk = next(todo, None)
                if chunk is None:
                    break
                work = mover.rehash if chunk.index in run.resumed else mover.copy
                inflight.add(loop.run_in_executor(pool, work, chunk))
            if not inflight:
                break
            finished, inflight = await asyncio.wait(inflight, timeout=TICK, return_when=asyncio.FIRST_COMPLETED)
            if not finished:
                # A stuck lane stays silent, so Temporal's heartbeat timeout still catches it.
                if on_progress is not None and mover.alive():
                    await on_progress(run.progress())
                continue
            errors = [exc for fut in finished if (exc := fut.exception()) is not None]
            if errors:
                raise errors[0]  # every finished future's outcome is retrieved: no stray warnings
            for fut in finished:
                run.record(fut.result(), log)
            progress = run.progress()
            if durable is not None:
                await durable.offer(progress.checkpoint)
            if on_progress is not None:
                await on_progress(progress)
    finally:
        for fut in inflight:
            fut.cancel()


async def _final_check(
    loop: asyncio.AbstractEventLoop,
    pool: concurrent.futures.ThreadPoolExecutor,
    mover: ChunkMover,
    chunks: list[Chunk],
    run: _Run,
    *,
    lanes: int,
) -> str:
    """Hash every chunk from the flushed target; copy mismatches once more; the target's digest."""
    assert run.shas is not None
    shas = run.shas

    async def target_shas(todo: list[Chunk]) -> list[bytes]:
        out: list[bytes] = []
        for start in range(0, len(todo), lanes):  # bounded: lanes chunks in memory at a time
            batch = [loop.run_in_executor(pool, mover.rehash, c, True) for c in todo[start : start + lanes]]
            out += [o.sha or b"" for o in await asyncio.gather(*batch)]
        return out

    def differs(chunk: Chunk, sha: bytes) -> bool:
        return bytes(shas[digest.SIZE * chunk.index : digest.SIZE * (chunk.index + 1)]) != sha

    found = await target_shas(chunks)
    bad = [c for c, sha in zip(chunks, found, strict=True) if differs(c, sha)]
    if bad:
        for chunk in bad:
            run.result.repairs += 1
            await loop.run_in_executor(pool, mover.copy, chunk, True)
        await loop.run_in_executor(pool, mover.target.flush)
        again = await target_shas(bad)
        still = [c for c, sha in zip(bad, again, strict=True) if differs(c, sha)]
        if still:
            spans = ", ".join(f"{c.offset}+{c.length}" for c in still[:5])
            raise IntegrityError(
                f"after copying them again, {len(still)} chunk(s) still differ on the target: {spans}"
            )
        fixed = dict(zip((c.index for c in bad), again, strict=True))
        found = [fixed.get(c.index, sha) for c, sha in zip(chunks, found, strict=True)]
    disk = DiskDigest()
    for chunk, sha in zip(chunks, found, strict=True):
        disk.add(chunk, sha)
    return disk.hexdigest(len(chunks))


async def _stop(loop: asyncio.AbstractEventLoop, pool: concurrent.futures.ThreadPoolExecutor) -> None:
    """Wait for every lane to let go of the source and target before returning.

    A thread blocked in ``pread`` cannot be interrupted; returning while it runs would let
    the caller close a file descriptor that the lane then writes to (or to its reuse).
    """
    pool.shutdown(wait=False, cancel_futures=True)
    waiter = loop.run_in_executor(None, pool.shutdown, True)
    try:
        await asyncio.shield(waiter)
    except asyncio.CancelledError:
        pool.shutdown(wait=True)  # cancelled again while draining: block for one chunk
        raise
