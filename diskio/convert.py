"""Format conversion with ``qemu-img convert``, progress mapped to a callback; raw → qcow2 by the copier.

``-f`` is always passed: a probe can take a fixed VHD for raw, and the converted disk
then carries the VHD footer as guest data.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import re
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING

from core.children import die_with_parent
from core.errors import InvalidInput, TransferError
from diskio.progress import TransferProgress

if TYPE_CHECKING:
    from diskio.base import DiskSource
    from diskio.copier import CopyResult

_PROGRESS = re.compile(rb"\((\d+(?:\.\d+)?)/100%\)")

#: formats qemu-img knows by these names; anything else is refused before running it
KNOWN_FORMATS = frozenset({"raw", "qcow2", "qcow", "vmdk", "vpc", "vhdx", "vdi", "qed", "parallels", "luks"})


def convert_command(
    src_path: str | Path, src_fmt: str, dst_path: str | Path, dst_fmt: str, options: list[str] | None = None
) -> list[str]:
    """The ``qemu-img convert`` argument list.

    ``options`` are output-format options such as ``["subformat=fixed", "force_size=on"]``,
    passed as one ``-o``; a list whose first item starts with ``-`` is passed verbatim
    instead (e.g. ``["-c"]`` or ``["-o", "compat=1.1", "-W"]``).
    """
    for fmt in (src_fmt, dst_fmt):
        if fmt not in KNOWN_FORMATS:
            raise InvalidInput(f"unknown disk format {fmt!r}")
    args = ["qemu-img", "convert", "-p", "-f", src_fmt, "-O", dst_fmt]
    if options:
        args += options if options[0].startswith("-") else ["-o", ",".join(options)]
    return [*args, str(src_path), str(dst_path)]


async def convert_image(
    src_path: str | Path,
    src_fmt: str,
    dst_path: str | Path,
    dst_fmt: str,
    *,
    options: list[str] | None = None,
    on_progress: Callable[[float], Awaitable[None]] | None = None,
) -> None:
    """Convert an image with ``qemu-img convert -p``; ``on_progress`` gets percent 0..100.

    ``on_progress`` is awaited each time qemu-img reports a higher percentage. If the
    awaiting task is cancelled (or ``on_progress`` raises), qemu-img is killed and waited for
    before the error propagates. Raises ``TransferError`` with qemu-img's message on failure.
    """
    proc = await asyncio.create_subprocess_exec(
        *convert_command(src_path, src_fmt, dst_path, dst_fmt, options),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        preexec_fn=die_with_parent,
    )
    assert proc.stdout is not None and proc.stderr is not None
    stderr_task = asyncio.ensure_future(proc.stderr.read())
    try:
        last = -1.0
        pending = b""
        while chunk := await proc.stdout.read(4096):
            # qemu-img redraws "    (12.34/100%)" with carriage returns
            pending += chunk
            matches = list(_PROGRESS.finditer(pending))
            if matches:
                pending = pending[matches[-1].end() :]
                percent = float(matches[-1].group(1))
                if percent > last and on_progress is not None:
                    last = percent
                    await on_progress(percent)
            pending = pending[-64:]
        rc = await proc.wait()
        err = (await stderr_task).decode(errors="replace").strip()
    except BaseException:
        await _kill(proc)
        stderr_task.cancel()
        with contextlib.suppress(BaseException):
            await stderr_task
        raise
    if rc != 0:
        raise TransferError(f"qemu-img convert {src_fmt}->{dst_fmt} failed ({rc}): {err[-2000:]}")
    if on_progress is not None and last < 100.0:
        await on_progress(100.0)


async def write_qcow2(
    src_path: str | Path, src_fmt: str, dst_path: str | Path, *,
    on_progress: Callable[[float], Awaitable[None]] | None = None,
) -> CopyResult | None:
    """A disk into a new qcow2 image written by the copier (``diskio.qcow2``), every chunk hashed and
    compared with the image's bytes as it is written; ``on_progress`` gets percent 0..100.

    Where ``qemu-img convert`` verifies nothing, and a check after it reads the whole image again. The
    source is a raw file, or an image read in place (``diskio.imagemap``: a morphed disk's qcow2 overlay
    on its raw export, say). None, with nothing written, for one that cannot be read in place
    (compressed, encrypted, another format in its chain): ``convert_image`` takes those.
    """
    from diskio.copier import copy_disk
    from diskio.imagemap import open_mapped
    from diskio.local import RawFileSource
    from diskio.qcow2 import Qcow2FileTarget

    async def percent(p: TransferProgress) -> None:
        if on_progress is not None:
            await on_progress(100.0 * p.bytes_done / p.bytes_total if p.bytes_total else 100.0)

    source: DiskSource | None = await asyncio.to_thread(
        RawFileSource if src_fmt == "raw" else functools.partial(open_mapped, fmt=src_fmt), src_path)
    if source is None:
        return None
    try:
        target = await asyncio.to_thread(Qcow2FileTarget, dst_path, source.size)
        try:
            return await copy_disk(source, target, on_progress=percent)
        finally:
            await asyncio.to_thread(target.close)
    finally:
        await asyncio.to_thread(source.close)


async def _kill(proc: asyncio.subprocess.Process) -> None:
    if proc.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        # shielded so that a second cancellation does not leave a zombie qemu-img behind
        await asyncio.shield(proc.wait())
