"""The raw → raw case's floor: the allocated bytes written once into a new file, nothing else.

Each extent of the source is written with ``pwrite`` in 1 MiB steps straight from the source's
page-cache pages, mapped before the clock starts (no read into a buffer, no digest, no read-back, no
zero detection, one thread). No copy into a new file through the page cache does less; what the
engine takes above this is the engine's, and a bar below it is out of reach of any copier on that
machine. Its peak RSS counts the source's mapped pages: not a figure to compare.

usage: python -m bench.write_floor SRC DST; prints ``{"seconds": ..., "cpu": ...}`` for the copy alone.
"""

from __future__ import annotations

import json
import mmap
import os
import sys
import time

from diskio.local import RawFileSource

STEP = 1 << 20


def main() -> None:
    src, dst = sys.argv[1], sys.argv[2]
    source = RawFileSource(src)
    try:
        extents, size = source.extents(), source.size
    finally:
        source.close()
    fd = os.open(src, os.O_RDONLY)
    out = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    # Every extent mapped, its page tables filled, before the clock starts: the floor is the writes
    # alone (the engine maps a chunk while another lane writes; here nothing overlaps them)
    maps = []
    for ext in extents:
        base = ext.offset // mmap.PAGESIZE * mmap.PAGESIZE
        pages = mmap.mmap(fd, ext.end - base, flags=mmap.MAP_SHARED | mmap.MAP_POPULATE, prot=mmap.PROT_READ,
                          offset=base)
        maps.append((ext, base, pages, memoryview(pages)))
    start, cpu = time.perf_counter(), time.process_time()
    for ext, base, _, view in maps:
        for pos in range(ext.offset, ext.end, STEP):
            os.pwrite(out, view[pos - base : min(pos + STEP, ext.end) - base], pos)
    os.ftruncate(out, size)
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    os.close(out)
    for _, _, pages, view in maps:
        view.release()
        pages.close()
    os.close(fd)
    print(json.dumps({"seconds": seconds, "cpu": cpu}))


if __name__ == "__main__":
    main()
