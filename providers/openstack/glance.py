"""Glance image data through the disk engine (image API v2), checked against Glance's checksums.

Upload: the converted file's bytes are the body of one ``PUT /v2/images/{id}/file``
(``diskio.stream.HttpStreamTarget``), driven by ``copy_disk`` with one lane: the shared
bandwidth limiter, progress and heartbeats of every transfer. Glance cannot take data at an
offset, so a retried upload starts over into a new image.

Download: ``Range`` reads of ``GET /v2/images/{id}/file`` (``diskio.http.HttpRangeSource``) into
a local file, several lanes at a time. The done ranges are kept next to the partial file, so a
retried snapshot on the same host resumes the download instead of starting over.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import threading
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

from core.errors import IntegrityError, TransferError
from diskio.base import Extent
from diskio.copier import ProgressCallback, copy_disk
from diskio.http import HttpRangeSource
from diskio.local import LocalFileTarget, RawFileSource
from diskio.progress import TransferProgress
from diskio.stream import HttpStreamTarget
from providers.openstack.cloud import Cloud

#: the unit of progress (and of the download's checkpoint): one range request per chunk
CHUNK = 8 * 1024 * 1024
#: parallel range requests of a download (one kept-alive connection each)
DOWNLOAD_LANES = 4
#: the digests Glance computes (``checksum`` and the default ``os_hash_algo``)
DIGESTS = ("md5", "sha512")
#: seconds between looks at a download's stop signal
STOP_POLL = 0.25

T = TypeVar("T")


class WholeFile(RawFileSource):
    """The file's own bytes, whatever its format (Glance stores the image file as it is), holes
    included: all of them go into the body, so all of them count as progress."""

    def extents(self) -> list[Extent]:
        return [Extent(0, self.size)] if self.size else []


def _file_url(cloud: Cloud, image_id: str) -> str:
    return f"{cloud.endpoint('image')}/v2/images/{image_id}/file"


async def upload(cloud: Cloud, image_id: str, path: Path, *, on_progress: ProgressCallback,
                 bandwidth_limit: int | None = None) -> dict[str, str]:
    """Stream ``path`` into the queued image; returns the ``md5`` and ``sha512`` of what was sent."""
    url = await asyncio.to_thread(_file_url, cloud, image_id)
    # One request: Glance checks the token when it starts, however long the body takes.
    headers = {"X-Auth-Token": await asyncio.to_thread(cloud.token), "Content-Type": "application/octet-stream"}
    source = await asyncio.to_thread(WholeFile, path)
    target = HttpStreamTarget(url, source.size, headers=headers, verify_tls=cloud.verify_tls, hashes=DIGESTS)
    try:
        await copy_disk(source, target, on_progress=on_progress, bandwidth_limit=bandwidth_limit,
                        chunk_size=CHUNK, lanes=1)
    finally:
        await asyncio.to_thread(source.close)
        await asyncio.to_thread(target.close)
    return target.hexdigests()


def verify(image: dict[str, Any], digests: dict[str, str], size: int) -> None:
    """Glance's own checksum, multihash and size must equal those of the bytes on this side."""
    if image.get("checksum") and image["checksum"] != digests["md5"]:
        raise IntegrityError(f"Glance image {image['id']} has checksum {image['checksum']}, "
                             f"this side {digests['md5']}")
    if image.get("os_hash_algo") == "sha512" and image.get("os_hash_value") != digests["sha512"]:
        raise IntegrityError(f"Glance image {image['id']}: sha512 differs from this side's")
    if image.get("size") is not None and int(image["size"]) != size:
        raise IntegrityError(f"Glance image {image['id']} holds {image['size']} bytes, this side {size}")


def download(cloud: Cloud, image: dict[str, Any], target: Path, *, bandwidth_limit: int | None = None,
             stop: threading.Event | None = None) -> None:
    """The image's data into ``target`` (written under a temporary name), checked against Glance's
    checksums. Blocking: it runs the copier in an event loop of its own, which ``stop`` cancels (the
    partial file and its checkpoint stay: a retry resumes from them)."""
    partial = target.with_suffix(target.suffix + ".partial")
    done_file = target.with_suffix(target.suffix + ".done.json")
    size = int(image.get("size") or 0)
    # The checkpoint is only worth something if the partial file it describes survived.
    checkpoint = ([(int(a), int(b)) for a, b in json.loads(done_file.read_text())]
                  if done_file.exists() and partial.exists() else None)
    url = _file_url(cloud, image["id"])

    async def record(progress: TransferProgress) -> None:
        done_file.write_text(json.dumps(progress.checkpoint))

    # The token is asked for before each range: the session renews it when a long download outlives it.
    source = HttpRangeSource(url, size=size, auth=lambda: {"X-Auth-Token": cloud.token()}, verify_tls=cloud.verify_tls)
    try:
        dst = LocalFileTarget(partial, size)
        try:
            # verify=False: the whole file is checked against Glance's checksums below, a stronger check
            # than reading each chunk back as it is written.
            asyncio.run(_until_stopped(copy_disk(
                source, dst, checkpoint=checkpoint, on_progress=record, verify=False,
                bandwidth_limit=bandwidth_limit, chunk_size=CHUNK, lanes=DOWNLOAD_LANES), stop))
        finally:
            dst.close()
    finally:
        source.close()
    try:
        verify(image, file_digests(partial), size)
    except IntegrityError:
        partial.unlink()
        done_file.unlink(missing_ok=True)
        raise
    partial.rename(target)
    done_file.unlink(missing_ok=True)


async def _until_stopped(work: Coroutine[Any, Any, T], stop: threading.Event | None) -> T:
    """``work``, cancelled once ``stop`` is set: the copier then stops its lanes at their next I/O."""
    task = asyncio.ensure_future(work)
    while stop is not None and not task.done():
        await asyncio.wait({task}, timeout=STOP_POLL)
        if stop.is_set() and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            raise TransferError("Glance download stopped: the step was cancelled")
    return await task


def file_digests(path: Path) -> dict[str, str]:
    """The ``DIGESTS`` of a local file, in one pass."""
    hashes = {name: hashlib.new(name, usedforsecurity=False) for name in DIGESTS}
    with open(path, "rb") as f:
        while block := f.read(CHUNK):
            for h in hashes.values():
                h.update(block)
    return {name: h.hexdigest() for name, h in hashes.items()}
