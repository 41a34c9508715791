"""CPU seconds per GiB of each stage of the engine's data paths, one stage at a time (``python -m bench.stages``).

Each stage runs alone in this process over the 1 GiB of data of ``bench/out/disk4g.raw`` (built
by ``make bench``), warm in the page cache, and reports its wall and CPU (user+sys) time, and the
whole machine's CPU meanwhile (``/proc/stat``: the HTTP stages' nginx and its share of the loopback
TCP work, which moves between sender and receiver). The sum of a path's stages, set against the
baselines' CPU in ``make bench``, names what saturates, and where a bar lies below the sum of the
stages no design meets it on this machine.
"""

from __future__ import annotations

import asyncio
import http.client
import os
import resource
import subprocess
import threading
import time
import urllib.parse
from collections.abc import Callable
from pathlib import Path

import blake3
import xxhash

from bench import nginx
from bench.image import GiB, MiB, allocated
from bench.run import WORK
from diskio.checked_convert import chunk_digests
from diskio.http import HttpRangeSource
from diskio.imagemap import open_mapped
from diskio.lane import ChunkMover
from diskio.local import LocalFileTarget, RawFileSource
from diskio.mapped import Pages
from diskio.plan import Chunk, align_extents, cut_chunks
from diskio.qemu import QemuNbdSource

STEP = 128 * 1024


def _cpu() -> float:
    total = 0.0
    for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN):
        usage = resource.getrusage(who)
        total += usage.ru_utime + usage.ru_stime
    return total


def _machine_cpu() -> float:
    """CPU seconds every process of the machine has used (user, system, interrupts), from ``/proc/stat``."""
    with open("/proc/stat") as stat:
        fields = [int(x) for x in stat.readline().split()[1:8]]
    return (sum(fields) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")  # less idle and iowait


def _receive(url: str, chunks: list[Chunk], connections: int) -> None:
    """Each chunk as one ranged GET, received into a 256 KiB buffer and dropped: what a curl of the
    ranges does, on ``connections`` kept-alive connections at once."""
    todo, lock = list(reversed(chunks)), threading.Lock()
    parts = urllib.parse.urlsplit(url)

    def connection() -> None:
        conn, view = http.client.HTTPConnection(parts.netloc), memoryview(bytearray(256 * 1024))
        while True:
            with lock:
                if not todo:
                    break
                c = todo.pop()
            conn.request("GET", parts.path, headers={"Range": f"bytes={c.offset}-{c.offset + c.length - 1}"})
            body = conn.getresponse()
            if body.status != 206:
                raise SystemExit(f"{url}: range {c.offset}+{c.length} answered HTTP {body.status}")
            while body.readinto(view):
                pass
        conn.close()

    threads = [threading.Thread(target=connection) for _ in range(connections)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def _run_stages(todo: list[tuple[str, Callable[[], None]]], out: Path, alloc: int) -> list[str]:
    """One table row per stage, per GiB of ``alloc`` bytes; ``out`` removed and synced before a stage that writes it."""
    lines: list[str] = []
    for name, fn in todo:
        if name.startswith(("pread source + pwrite", "copy_file_range", "HTTP: the engine's")):
            out.unlink(missing_ok=True)
            os.sync()
        c, m, t = _cpu(), _machine_cpu(), time.perf_counter()
        fn()
        wall, cpu, machine = time.perf_counter() - t, _cpu() - c, _machine_cpu() - m
        per_gib = [f"{x * GiB / alloc:.2f}" for x in (wall, cpu, machine)]
        lines.append(f"| {name} | {' | '.join(per_gib)} |")
        print(lines[-1], flush=True)
    return lines


def main() -> None:
    src = WORK / "disk4g.raw"
    qcow2 = WORK / "stages.qcow2"
    alloc = allocated(src)
    source = RawFileSource(src)
    extents = source.extents()
    fd = os.open(src, os.O_RDONLY)
    buf, check = bytearray(STEP), bytearray(STEP)
    view, check_view = memoryview(buf), memoryview(check)
    out = WORK / "stages.raw"

    def steps() -> list[int]:
        return [p for e in extents for p in range(e.offset, e.end, STEP)]

    def read() -> None:
        for p in steps():
            os.preadv(fd, [view], p)

    def hash_only() -> None:
        h = blake3.blake3()
        for _ in range(alloc // STEP):
            h.update(view)

    def xxh3_only() -> None:
        h = xxhash.xxh3_128()
        for _ in range(alloc // STEP):
            h.update(view)

    def write() -> None:
        dfd = os.open(out, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
        for p in steps():
            os.preadv(fd, [view], p)
            os.pwritev(dfd, [view], p)
        os.close(dfd)

    def readback() -> None:
        dfd = os.open(out, os.O_RDONLY)
        with Pages(fd, 0, source.size) as whole:
            for p in steps():
                n = os.preadv(dfd, [check_view], p)
                if not check.startswith(whole[p : p + n]):
                    raise SystemExit(f"the written file differs at {p}")
        os.close(dfd)

    def copy_range() -> None:
        dfd = os.open(out, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
        for e in extents:
            p = e.offset
            while p < e.end:
                p += os.copy_file_range(fd, dfd, min(STEP, e.end - p), p, p)
        os.close(dfd)

    chunks = cut_chunks(align_extents(extents, source.size, 512), 8 * MiB)

    def lent_hash() -> None:
        h, piece = xxhash.xxh3_128(), bytearray(MiB)
        for c in chunks:
            source.feed(c.offset, c.length, h.update, piece)

    def compare_in_place() -> None:
        target = LocalFileTarget(out, source.size)
        for c in chunks:
            lent = source.pages(c.offset, c.length)
            assert lent is not None
            with lent as pages:
                if not target.matches(c.offset, pages, bytearray(c.length)):
                    raise SystemExit(f"the written file differs at {c.offset}")
        target.close()

    def target_hash() -> None:
        target, h, piece = LocalFileTarget(out, source.size), xxhash.xxh3_128(), bytearray(MiB)
        for c in chunks:
            target.feed(c.offset, c.length, h.update, piece)
        target.close()

    def image_read_mapped() -> None:
        reader = open_mapped(qcow2, "qcow2")
        assert reader is not None
        asyncio.run(chunk_digests(reader, chunks))
        reader.close()

    def image_read_nbd() -> None:
        reader = QemuNbdSource(qcow2, "qcow2")
        asyncio.run(chunk_digests(reader, chunks))
        reader.close()

    def http_lane(url: str) -> None:
        """The engine's own lane code (``ChunkMover``) on one thread, without the copier around it."""
        http_source = HttpRangeSource(url, size=source.size, extents=extents)
        target = LocalFileTarget(out, source.size)
        mover = ChunkMover(http_source, target, chunk_size=8 * MiB, block=512, verify=True, limiter=None)
        for c in chunks:
            mover.copy(c)
        http_source.close()
        target.close()

    qcow2.unlink(missing_ok=True)
    subprocess.run(["qemu-img", "convert", "-f", "raw", "-O", "qcow2", str(src), str(qcow2)], check=True)

    stages: list[tuple[str, Callable[[], None]]] = [
        ("pread source, 128 KiB (user copy)", read),
        ("BLAKE3, 128 KiB updates (in cache; the digest before 2026-12)", hash_only),
        ("XXH3-128, 128 KiB updates (in cache; the engine's digest)", xxh3_only),
        ("pread source + pwrite new file, 128 KiB", write),
        ("pread the written file back + memcmp with the source's mapped pages", readback),
        ("the written file's pages compared with the source's, mapped (the engine's repair check)",
         compare_in_place),
        ("XXH3-128 of the written file's mapped pages (the engine's check)", target_hash),
        ("XXH3-128 of the source's mapped pages (no copy; the engine's hash)", lent_hash),
        ("copy_file_range source → new file, 128 KiB", copy_range),
        ("qcow2 read back in place (qemu-img map) + XXH3-128", image_read_mapped),
        ("qcow2 read back through qemu-nbd + XXH3-128", image_read_nbd),
    ]
    lines = _run_stages(stages, out, alloc)
    with nginx.serve(WORK) as base:
        url = base + src.name
        _receive(url, chunks, 1)  # nginx's workers up, its connections warm
        http_stages: list[tuple[str, Callable[[], None]]] = [
            ("HTTP (nginx, loopback): the 8 MiB ranges received, 1 connection, nothing written",
             lambda: _receive(url, chunks, 1)),
            ("HTTP: the ranges received, 4 connections at once, nothing written", lambda: _receive(url, chunks, 4)),
            ("HTTP: the engine's lane (receive, XXH3-128, pwrite, compare in place) on one thread",
             lambda: http_lane(url)),
        ]
        lines += _run_stages(http_stages, out, alloc)
    os.close(fd)
    source.close()
    out.unlink(missing_ok=True)
    qcow2.unlink(missing_ok=True)
    head = ["| stage (alone, warm cache) | wall s/GiB | CPU s/GiB | machine CPU s/GiB |", "|---|---:|---:|---:|"]
    text = "\n".join(head + lines) + "\n"
    (WORK / "stages.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
