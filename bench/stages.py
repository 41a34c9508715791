"""CPU seconds per GiB of each stage of the engine's data paths, one stage at a time (``python -m bench.stages``).

Each stage runs alone in this process over the 1 GiB of data of ``bench/out/disk4g.raw`` (built
by ``make bench``), warm in the page cache, and reports its wall and CPU (user+sys) time. The
sum of a path's stages, set against the baselines' CPU in ``make bench``, names what saturates.
"""

from __future__ import annotations

import asyncio
import os
import resource
import subprocess
import time
from collections.abc import Callable

import blake3
import xxhash

from bench.image import GiB, MiB, allocated
from bench.run import WORK
from diskio.checked_convert import chunk_digests
from diskio.imagemap import open_mapped
from diskio.local import LocalFileTarget, RawFileSource
from diskio.mapped import Pages
from diskio.plan import align_extents, cut_chunks
from diskio.qemu import QemuNbdSource

STEP = 128 * 1024


def _cpu() -> float:
    total = 0.0
    for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN):
        usage = resource.getrusage(who)
        total += usage.ru_utime + usage.ru_stime
    return total


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
    lines = ["| stage (alone, warm cache) | wall s/GiB | CPU s/GiB |", "|---|---:|---:|"]
    for name, fn in stages:
        if name.startswith(("pread source + pwrite", "copy_file_range")):
            out.unlink(missing_ok=True)
            os.sync()
        c, t = _cpu(), time.perf_counter()
        fn()
        wall, cpu = time.perf_counter() - t, _cpu() - c
        lines.append(f"| {name} | {wall * GiB / alloc:.2f} | {cpu * GiB / alloc:.2f} |")
        print(lines[-1], flush=True)
    os.close(fd)
    source.close()
    out.unlink(missing_ok=True)
    qcow2.unlink(missing_ok=True)
    text = "\n".join(lines) + "\n"
    (WORK / "stages.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
