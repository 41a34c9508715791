"""Format conversion with the real qemu-img."""

from __future__ import annotations

import asyncio
import os
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from core.errors import InvalidInput, TransferError
from diskio.convert import convert_command, convert_image

MiB = 1024 * 1024
DiskFactory = Callable[..., Path]


def compare(a: Path, fa: str, b: Path, fb: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["qemu-img", "compare", "-f", fa, "-F", fb, str(a), str(b)],
        check=False,
        capture_output=True,
        text=True,
    )


def size_of(path: Path) -> int:
    return path.stat().st_size


def qemu_img_children() -> list[int]:
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            comm, rest = stat[stat.index("(") + 1 : stat.rindex(")")], stat[stat.rindex(")") + 2 :].split()
            if comm == "qemu-img" and int(rest[1]) == os.getpid():
                pids.append(int(entry))
    return pids


def test_command_always_names_the_source_format() -> None:
    cmd = convert_command("a.vhd", "vpc", "b.raw", "raw", ["subformat=fixed", "force_size=on"])
    assert cmd[:7] == ["qemu-img", "convert", "-p", "-f", "vpc", "-O", "raw"]
    assert cmd[7:9] == ["-o", "subformat=fixed,force_size=on"]
    assert convert_command("a", "raw", "b", "qcow2", ["-c"])[7] == "-c"


async def test_roundtrip_reports_rising_progress_up_to_100(disk: DiskFactory, tmp_path: Path) -> None:
    src = disk(runs=[(0, 24 * MiB), (40 * MiB, 24 * MiB)])
    seen: list[float] = []

    async def progress(percent: float) -> None:
        seen.append(percent)

    # Compressing random data keeps qemu-img busy for a second or more, so its progress lines reach
    # the pipe over time; an uncompressed 48 MiB copy ended before a loaded machine scheduled the
    # reader, which then saw only the last line (the reader reports the latest figure per read).
    await convert_image(src, "raw", tmp_path / "a.qcow2", "qcow2", options=["-c"], on_progress=progress)
    await convert_image(tmp_path / "a.qcow2", "qcow2", tmp_path / "b.raw", "raw")
    assert compare(src, "raw", tmp_path / "b.raw", "raw").returncode == 0
    assert seen == sorted(seen) and seen[-1] == 100.0
    assert any(0 < p < 100 for p in seen)  # parsed from qemu-img -p, not only the final call


async def test_fixed_vhd_converts_back_to_its_exact_size(disk: DiskFactory, tmp_path: Path) -> None:
    src = disk(runs=[(0, 4 * MiB)])
    vhd = tmp_path / "a.vhd"
    await convert_image(src, "raw", vhd, "vpc", options=["subformat=fixed", "force_size=on"])
    await convert_image(vhd, "vpc", tmp_path / "back.raw", "raw")
    assert size_of(tmp_path / "back.raw") == size_of(src)
    # What the explicit -f prevents: read as raw, the VHD footer becomes guest data.
    await convert_image(vhd, "raw", tmp_path / "wrong.raw", "raw")
    assert size_of(tmp_path / "wrong.raw") == size_of(src) + 512


async def test_cancel_kills_qemu_img(disk: DiskFactory, tmp_path: Path) -> None:
    src = disk(size=256 * MiB, runs=[(0, 128 * MiB)])
    started = asyncio.Event()

    async def progress(percent: float) -> None:
        if percent > 0:
            started.set()

    # streamOptimized VMDK compresses with zlib: slow enough to be caught in the middle
    task = asyncio.ensure_future(
        convert_image(
            src,
            "raw",
            tmp_path / "a.vmdk",
            "vmdk",
            options=["subformat=streamOptimized"],
            on_progress=progress,
        )
    )
    await asyncio.wait_for(started.wait(), timeout=60)
    assert qemu_img_children()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert qemu_img_children() == []


async def test_failure_and_bad_format_are_reported(tmp_path: Path) -> None:
    with pytest.raises(TransferError, match="qemu-img convert"):
        await convert_image(tmp_path / "missing.qcow2", "qcow2", tmp_path / "x.raw", "raw")
    with pytest.raises(InvalidInput):
        await convert_image(tmp_path / "a", "floppy", tmp_path / "b", "raw")
