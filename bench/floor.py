"""The HTTP case's floor (``floor.c``): built with ``cc`` into the bench's directory, run on the engine's chunks."""

from __future__ import annotations

import shutil
import subprocess
import urllib.parse
from pathlib import Path

from diskio.copier import DEFAULT_CHUNK_SIZE
from diskio.local import RawFileSource
from diskio.plan import align_extents, cut_chunks

SOURCE = Path(__file__).with_name("floor.c")
#: one connection: as fast as 2 or 4 on the Zen 5 machine (0.392, 0.398, 0.398 s for the 1 GiB: a
#: file's buffered writes take its inode lock in turn) and half their CPU (theirs spins on that lock)
CONNECTIONS = 1


def build(work: Path) -> Path:
    """``work/floor``, compiled from ``floor.c`` (gcc is in deploy/apt/build.txt, which ``make`` installs)."""
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        raise SystemExit("the HTTP floor needs a C compiler: install deploy/apt/build.txt")
    binary = work / "floor"
    subprocess.run([cc, "-O2", "-pthread", "-o", str(binary), str(SOURCE)], check=True)
    return binary


def command(binary: Path, url: str, src: Path, dst: Path) -> list[str]:
    """The floor fetching ``src``'s allocated ranges from ``url`` into ``dst``, cut as the engine cuts them."""
    source = RawFileSource(src)
    try:
        chunks = cut_chunks(align_extents(source.extents(), source.size, 512), DEFAULT_CHUNK_SIZE)
        size = source.size
    finally:
        source.close()
    ranges = binary.with_suffix(".ranges")
    ranges.write_text("".join(f"{c.offset} {c.length}\n" for c in chunks))
    parts = urllib.parse.urlsplit(url)
    return [str(binary), str(parts.port), parts.path, str(dst), str(size), str(ranges), str(CONNECTIONS)]
