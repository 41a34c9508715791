"""The GCP source's streamed read of an exported tarball: GNU tar's own sparse and regular members,
read by the copier's lanes out of order, and a read behind the stream."""

from __future__ import annotations

import asyncio
import os
import subprocess
from pathlib import Path

import pytest

from core.errors import IntegrityError
from diskio.copier import copy_disk
from diskio.local import LocalFileTarget
from providers.gcp import tarsource
from providers.gcp.tarsource import TarballDiskSource

MIB = 1024 * 1024


def _disk(tmp_path: Path) -> Path:
    path = tmp_path / "disk.raw"
    with open(path, "wb") as f:
        f.truncate(16 * MIB)
        for at in (0, 5 * MIB, 11 * MIB + 4096):
            f.seek(at)
            f.write(os.urandom(MIB + 512))
    return path


@pytest.mark.parametrize("sparse", [True, False])
def test_lanes_read_the_tarball_back_identical(tmp_path: Path, sparse: bool) -> None:
    disk = _disk(tmp_path)
    tarball = tmp_path / "out.tar.gz"
    subprocess.run(["tar", "--format=gnu", "-czf" if not sparse else "-cSzf", str(tarball), "-C", str(tmp_path),
                    "disk.raw"], check=True)
    src = TarballDiskSource(lambda: open(tarball, "rb"), disk.stat().st_size, "test")  # noqa: SIM115
    # GNU tar's sparse map is the extents; a regular member is over-approximated by the whole disk.
    assert (sum(e.length for e in src.extents()) < 8 * MIB) is sparse
    out = tmp_path / "copy.raw"
    dst = LocalFileTarget(out, src.size)
    asyncio.run(copy_disk(src, dst, chunk_size=256 * 1024, lanes=4))
    dst.close()
    assert out.read_bytes() == disk.read_bytes()
    # A read behind the stream, nothing kept for it: the object is opened again, and the bytes are right.
    assert src.read(5 * MIB, 4096) == disk.read_bytes()[5 * MIB:5 * MIB + 4096]
    assert src.opened == 2
    src.close()


def test_out_of_order_reads_are_kept_and_a_short_tarball_is_refused(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    disk = _disk(tmp_path)
    data = disk.read_bytes()
    tarball = tmp_path / "out.tar.gz"
    subprocess.run(["tar", "--format=gnu", "-czf", str(tarball), "-C", str(tmp_path), "disk.raw"], check=True)
    src = TarballDiskSource(lambda: open(tarball, "rb"), len(data), "test")  # noqa: SIM115
    assert src.read(2 * MIB, MIB) == data[2 * MIB:3 * MIB]
    assert src.read(0, MIB) == data[:MIB] and src.read(MIB, MIB) == data[MIB:2 * MIB]
    assert src.opened == 1, "what was inflated on the way was kept"
    monkeypatch.setattr(tarsource, "KEEP", MIB)
    assert src.read(10 * MIB, MIB) == data[10 * MIB:11 * MIB]
    assert src.read(4 * MIB, MIB) == data[4 * MIB:5 * MIB]  # beyond KEEP: read again from the start
    assert src.opened == 2
    src.close()
    # A tarball cut short (an export that did not finish) fails the read, never yields short data.
    cut = tmp_path / "cut.tar.gz"
    cut.write_bytes(subprocess.run(["gzip", "-dc", str(tarball)], capture_output=True, check=True).stdout[:9 * MIB])
    subprocess.run(["gzip", "-f", str(cut)], check=True)
    short = TarballDiskSource(lambda: open(str(cut) + ".gz", "rb"), len(data), "cut")  # noqa: SIM115
    with pytest.raises(IntegrityError, match="truncated"):
        short.read(12 * MIB, MIB)
    short.close()
