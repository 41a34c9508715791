"""Destination data path: one converted raw disk into one GCS object, ``disk.raw`` in a sparse tarball.

GCE creates images only from a gzip'd GNU-sparse tar holding ``disk.raw`` whose size is a
whole number of GiB (``rawDisk.source``). ``diskio.sparsetar`` produces that stream from the
disk engine's source, reading only allocated extents, and this module sends it through the GCS
resumable-upload protocol in 8 MiB chunks as it is produced: nothing is staged on scratch.

Why not "an empty disk written directly": GCE has no API that writes a disk's blocks (unlike
EBS direct or Azure page blobs); the alternatives are this import, or a helper instance that
attaches an empty disk and receives the bytes over the network. The import costs no VM and no
network path to the project, so it is the default.

Resume: the session URI is kept in the instance's scratch folder. A retried activity asks GCS
how much it holds (``Content-Range: bytes */*``), produces the same deterministic stream again
and sends only the rest; the object's CRC32C, which GCS computes, is compared with the whole
stream's, so a resumed upload that went wrong is caught. A cancel deletes the session, so no
object is ever created.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import re
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import google_crc32c

from core.errors import IntegrityError, InvalidInput, ProviderTransient
from core.models import DiskLocator, ImportedDisk, InstanceInfo
from diskio.keepalive import beating, in_thread
from diskio.limiter import RateLimiter, Stopped
from diskio.local import open_local_source
from diskio.sparsetar import SparseTarStream, rechunk
from providers.base import ActionContext, TransferContext, TransferProgress
from providers.gcp.connection import GcpConnection, gcp_errors

GIB = 1024**3
#: a resumable upload's chunks must be multiples of 256 KiB, except the last
CHUNK = 8 * 1024 * 1024
QUANTUM = 256 * 1024
HEARTBEAT_EVERY = 1.0


def chunk_size(limit: int | None) -> int:
    """Under a bandwidth cap, chunks that take ~0.25 s, so that a cancel or a stop waits little."""
    if not limit:
        return CHUNK
    return max(QUANTUM, min(CHUNK, limit // 4) // QUANTUM * QUANTUM)


def safe(name: str) -> str:
    return re.sub(r"[^a-z0-9-]", "-", name.lower()).strip("-") or "disk"


def instance_key(action: ActionContext, name: str) -> str:
    """The action's instance as a GCP name part (an object folder, a label value, part of an image name):
    unique within the action, as disk ids are not (every VM's first disk is ``disk-0``, or key 2000 on
    vSphere). ``name``, the source's name, stands in outside an action."""
    instance = action.instance or name
    return f"{safe(instance)[:40]}-{hashlib.sha256(instance.encode()).hexdigest()[:8]}"


def object_folder(migration: str | None, key: str) -> str:
    """Where an instance's tarballs go; its cleanup removes this folder and nothing of its siblings'."""
    return f"sterna/{migration or 'adhoc'}/{key}/"


def object_name(migration: str | None, key: str, disk_id: str) -> str:
    return f"{object_folder(migration, key)}{safe(disk_id)}.tar.gz"


def bucket_of(conn: GcpConnection, env: Mapping[str, Any]) -> str:
    bucket = env.get("bucket") or conn.bucket
    if not bucket:
        raise InvalidInput("a GCS bucket to stage the disk images is needed: set 'bucket' in the endpoint's "
                           "connection_info or in destination_environment")
    return str(bucket)


def public_url(bucket: str, name: str) -> str:
    """What ``rawDisk.source`` takes (GCE resolves it itself, whatever the storage endpoint)."""
    return f"https://storage.googleapis.com/{bucket}/{name}"


def _crc32c_b64(value: int) -> str:
    return base64.b64encode(value.to_bytes(4, "big")).decode()


class _Upload:
    """The blocking part, run in a thread: produce the stream, skip what GCS has, send the rest."""

    def __init__(self, session: Any, url: str, stream: SparseTarStream, start: int,
                 limiter: RateLimiter | None, chunk_size: int = CHUNK) -> None:
        self.session, self.url, self.stream, self.start = session, url, stream, start
        self.limiter = limiter
        self.chunk_size = chunk_size
        self.stop = threading.Event()
        self.crc = google_crc32c.Checksum()  # type: ignore[no-untyped-call]
        self.sent = 0
        self.result: dict[str, Any] = {}

    def _put(self, data: bytes, first: int, total: int | None) -> int:
        """Send ``data`` at ``first``; returns what GCS has persisted after it."""
        last = first + len(data) - 1
        rng = f"bytes {first}-{last}/{total if total is not None else '*'}" if data else f"bytes */{total}"
        resp = self.session.put(self.url, data=data, headers={"Content-Range": rng}, timeout=300)
        if resp.status_code in (200, 201):
            self.result = resp.json()
            return first + len(data)
        if resp.status_code == 308:
            got = resp.headers.get("Range")
            return int(got.rsplit("-", 1)[1]) + 1 if got else 0
        if resp.status_code in (404, 410):
            raise ProviderTransient("the GCS upload session expired; the upload starts over")
        if resp.status_code in (429,) or resp.status_code >= 500:
            raise ProviderTransient(f"GCS answered {resp.status_code} to an upload chunk")
        raise InvalidInput(f"GCS refused an upload chunk: HTTP {resp.status_code} {resp.text[:300]}")

    def run(self) -> None:
        pos = 0
        chunks = rechunk(self.stream.chunks(), self.chunk_size)
        pending: bytes | None = next(chunks, b"")
        while pending is not None:
            if self.stop.is_set():
                return
            following = next(chunks, None)
            self.crc.update(pending)  # type: ignore[no-untyped-call]
            end = pos + len(pending)
            total = end if following is None else None
            if end > self.start or total is not None:
                offset = max(pos, self.start)
                data = pending[offset - pos:]
                while True:
                    if self.limiter:
                        try:
                            self.limiter.acquire(len(data), self.stop)
                        except Stopped:
                            return  # cancelled while waiting for its bandwidth share
                    persisted = self._put(data, offset, total)
                    self.sent += len(data)
                    if persisted >= end:
                        break
                    data, offset = pending[persisted - pos:], persisted  # GCS kept less: resend the rest
            pos, pending = end, following


async def import_disk(conn: GcpConnection, env: Mapping[str, Any], export_info: InstanceInfo,
                      disk: DiskLocator, ctx: TransferContext, action: ActionContext) -> ImportedDisk:
    if disk.format != "raw" or not disk.path or not Path(disk.path).is_file():
        raise InvalidInput(f"disk {disk.disk_id} has no local raw image to upload ({disk.format}, {disk.path!r})")
    bucket_name = bucket_of(conn, env)
    migration = action.action_id
    name = object_name(migration, instance_key(action, export_info.name), disk.disk_id)
    # Off the event loop: the first call imports google-cloud-storage (seconds on a busy host).
    storage = await asyncio.to_thread(conn.storage)
    bucket = storage.bucket(bucket_name)
    with gcp_errors(f"looking for gs://{bucket_name}/{name}", conn.secrets):
        existing = await asyncio.to_thread(bucket.get_blob, name)
    if existing is not None:
        await ctx.aevent(f"disk {disk.disk_id}: gs://{bucket_name}/{name} was already uploaded")
        return _imported(disk, bucket_name, name, int((existing.metadata or {}).get("sterna-disk-bytes", 0)),
                         int(existing.size or 0), reused=True)

    source = open_local_source(disk.path)
    try:
        realsize = -(-max(source.size, disk.size_bytes) // GIB) * GIB
        stream = SparseTarStream(source, realsize=realsize)
        state_file = Path(ctx.workdir) / "gcs-upload" / f"{safe(disk.disk_id)}.json"
        session = await asyncio.to_thread(conn.authorized_session)  # may fetch a token
        saved, start = await asyncio.to_thread(_resume_point, session, state_file, name)
        url = saved or ""
        if saved is None:
            blob = bucket.blob(name)
            blob.metadata = {"sterna-migration-id": str(migration or ""), "sterna-disk-id": disk.disk_id,
                             "sterna-disk-bytes": str(realsize), "sterna-source-instance": export_info.name}
            with gcp_errors(f"starting the upload of gs://{bucket_name}/{name}", conn.secrets):
                url = str(await asyncio.to_thread(blob.create_resumable_upload_session,
                                                  content_type="application/gzip"))
            await asyncio.to_thread(_save_session, state_file, name, url)
            start = 0
        await ctx.aevent(
            f"disk {disk.disk_id}: streaming disk.raw ({realsize // GIB} GiB, {stream.source_total:,} bytes "
            f"allocated) as a sparse tarball to gs://{bucket_name}/{name}"
            + (f", resuming after {start:,} bytes GCS already holds" if start else ""))
        limiter = RateLimiter(ctx.bandwidth_limit) if ctx.bandwidth_limit else None
        upload = _Upload(session, url, stream, start, limiter, chunk_size(ctx.bandwidth_limit))
        await _run_beating(ctx, upload, conn, stream)
    finally:
        source.close()
    obj = upload.result
    digest: bytes = upload.crc.digest()  # type: ignore[no-untyped-call]
    expected = _crc32c_b64(int.from_bytes(digest, "big"))
    if obj.get("crc32c") and obj["crc32c"] != expected:
        with gcp_errors(f"deleting the corrupt object gs://{bucket_name}/{name}", conn.secrets):
            await asyncio.to_thread(bucket.delete_blob, name)
        state_file.unlink(missing_ok=True)
        raise IntegrityError(f"disk {disk.disk_id}: gs://{bucket_name}/{name} has CRC32C {obj['crc32c']}, "
                             f"the stream had {expected}")
    state_file.unlink(missing_ok=True)
    size = int(obj.get("size") or stream.output_bytes)
    await ctx.aevent(f"disk {disk.disk_id}: gs://{bucket_name}/{name} complete: tarball {size:,} bytes for "
                     f"{stream.source_total:,} allocated bytes of a {realsize:,}-byte disk.raw "
                     f"({upload.sent:,} bytes sent now, {start:,} resumed; CRC32C {expected} matches)")
    return _imported(disk, bucket_name, name, realsize, size, allocated=stream.source_total, resumed_bytes=start)


def _imported(disk: DiskLocator, bucket: str, name: str, realsize: int, size: int, **extra: Any) -> ImportedDisk:
    return ImportedDisk(disk_id=disk.disk_id, details={
        "bucket": bucket, "object": name, "source": public_url(bucket, name),
        "disk_size_gb": realsize // GIB, "tarball_bytes": size, **extra})


def _save_session(state_file: Path, name: str, url: str) -> None:
    """Keep the session's URL beside the work, so a later attempt resumes it (``_resume_point``)."""
    state_file.parent.mkdir(parents=True, exist_ok=True)
    state_file.write_text(json.dumps({"object": name, "session": url}))


def _resume_point(session: Any, state_file: Path, name: str) -> tuple[str | None, int]:
    """The saved session and how much GCS holds of it, or ``(None, 0)`` to start a new one."""
    try:
        saved = json.loads(state_file.read_text())
    except (OSError, ValueError):
        return None, 0
    if saved.get("object") != name:
        return None, 0
    resp = session.put(saved["session"], data=b"", headers={"Content-Range": "bytes */*"}, timeout=60)
    if resp.status_code == 308:
        got = resp.headers.get("Range")
        return saved["session"], int(got.rsplit("-", 1)[1]) + 1 if got else 0
    return None, 0


async def _run_beating(ctx: TransferContext, upload: _Upload, conn: GcpConnection,
                       stream: SparseTarStream) -> None:
    """Run the upload thread, heartbeating progress; a cancel stops it and deletes the session."""
    async def report() -> None:
        await ctx.progress(TransferProgress(stream.source_done, stream.source_total, []))

    try:
        with gcp_errors("uploading the disk tarball", conn.secrets):
            await beating(report, in_thread(upload.run), every=HEARTBEAT_EVERY, on_cancel=upload.stop.set)
    except asyncio.CancelledError:
        # GCS deletes an upload session on DELETE (HTTP 499): no object will ever appear.
        await asyncio.to_thread(_cancel_session, upload)
        raise
    finally:
        upload.stop.set()


def _cancel_session(upload: _Upload) -> None:
    with contextlib.suppress(OSError):
        upload.session.delete(upload.url, timeout=30)
