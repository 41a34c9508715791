"""Destination data path: one converted fixed VHD into one managed disk created for upload.

The sequence is Azure's direct upload: create the disk with ``createOption: Upload`` and the
VHD's exact size, grant a write SAS (``diskState`` ActiveUpload), Put Page only the non-zero
ranges (at most 4 MiB each, with Content-MD5) through the disk engine, revoke the SAS (the disk
becomes Unattached and usable). The SAS is revoked whatever happens, also on error and cancel.

The disk's name derives from the migration and disk ids, and it is tagged with them: a
retried activity finds it again. Marked complete → returned as is. Still ReadyToUpload → the
upload starts into it. ActiveUpload with this host's copy of its write SAS (see below) and a
checkpoint → the upload resumes into it from the checkpoint. ActiveUpload otherwise, or sealed
without the mark → revoked, deleted and uploaded again: Azure grants no second write SAS on a disk
(the fake's reading of the state machine), so without the first one a crashed upload starts over.

The write SAS is a credential. It never reaches Temporal, the record DB or a log; it is kept only
in the migration's scratch folder on the host doing the upload (a file of mode 0600 beside the
upload's checkpoint, in the folder that already holds the guest's disk image it grants writing
from), so that a worker killed mid-upload can resume on the same host. The file goes when the
SAS is revoked; cleanup revokes any SAS by tag whatever happens.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from core.errors import InvalidInput, NotFound
from core.models import DiskLocator, ImportedDisk, InstanceInfo
from diskio.copier import copy_disk
from diskio.local import open_local_source
from providers.azure import tags as t
from providers.azure.errors import azure_errors, error_code
from providers.azure.pageblob import MAX_PUT_PAGE, PageBlobTarget
from providers.azure.session import AzureClients
from providers.base import ActionContext, TransferContext, TransferProgress

MIB = 1024 * 1024
VHD_FOOTER = 512
SAS_SECONDS = 24 * 3600
LANES = 4


def disk_name(action: ActionContext, export_info: InstanceInfo, disk_id: str) -> str:
    migration = (action.action_id or "adhoc")[:12]
    return t.resource_name("sterna", migration, export_info.name, disk_id, limit=80)


def _vhd_size(disk: DiskLocator) -> int:
    if disk.format != "vpc":
        raise InvalidInput(f"disk {disk.disk_id} is {disk.format}: the Azure destination needs a fixed VHD (vpc)")
    if not disk.path or not os.path.isfile(disk.path):
        raise InvalidInput(f"disk {disk.disk_id} has no local VHD to upload (path {disk.path!r})")
    size = os.path.getsize(disk.path)
    if size <= VHD_FOOTER or (size - VHD_FOOTER) % MIB:
        raise InvalidInput(f"disk {disk.disk_id}: Azure needs a virtual size in whole MiB; the VHD holds "
                           f"{size - VHD_FOOTER} bytes")
    return size


def _get_disk(clients: AzureClients, name: str) -> Any | None:
    try:
        with azure_errors(f"looking for managed disk {name}", clients.conn.secrets):
            return clients.compute.disks.get(clients.rg, name)
    except NotFound:
        return None


def _create_disk(clients: AzureClients, name: str, size: int, tags: dict[str, str]) -> Any:
    # Bodies are written in ARM's wire shape: what the REST reference documents, and what the
    # SDK's models take as a mapping.
    body = {"location": clients.conn.location, "tags": tags,
            "properties": {"creationData": {"createOption": "Upload", "uploadSizeBytes": size}}}
    with azure_errors(f"creating managed disk {name} for upload", clients.conn.secrets):
        return clients.compute.disks.begin_create_or_update(clients.rg, name, body).result()


def grant(clients: AzureClients, name: str, access: str, resource: str = "disks") -> str:
    ops = getattr(clients.compute, resource)
    with azure_errors(f"granting {access.lower()} access to {name}", clients.conn.secrets):
        result = ops.begin_grant_access(
            clients.rg, name, {"access": access, "durationInSeconds": SAS_SECONDS}).result()
    return str(result.access_sas)


def revoke(clients: AzureClients, name: str, resource: str = "disks") -> None:
    ops = getattr(clients.compute, resource)
    with azure_errors(f"revoking the SAS of {name}", clients.conn.secrets):
        ops.begin_revoke_access(clients.rg, name).result()


def delete_disk(clients: AzureClients, name: str) -> None:
    with azure_errors(f"deleting managed disk {name}", clients.conn.secrets):
        clients.compute.disks.begin_delete(clients.rg, name).result()


def _mark_complete(clients: AzureClients, name: str, size: int, tags: dict[str, str]) -> None:
    # A PUT with the same creation data updates only the tags (the SDK's PATCH model lacks nothing
    # here, but PUT is what every ARM version accepts).
    _create_disk(clients, name, size, {**tags, t.UPLOAD_TAG: t.UPLOAD_COMPLETE})


async def import_disk(clients: AzureClients, env: Mapping[str, Any], export_info: InstanceInfo,
                      disk: DiskLocator, ctx: TransferContext, action: ActionContext) -> ImportedDisk:
    size = await asyncio.to_thread(_vhd_size, disk)
    name = disk_name(action, export_info, disk.disk_id)
    tags = {k: v for k, v in {
        **t.action_tags(action), t.ROLE_TAG: t.ROLE_DISK, t.DISK_TAG: disk.disk_id,
        t.SOURCE_INSTANCE_TAG: export_info.name}.items() if v}
    existing = await asyncio.to_thread(_get_disk, clients, name)
    state = t.text(getattr(existing, "disk_state", "")) if existing else ""
    if existing is not None and (existing.tags or {}).get(t.UPLOAD_TAG) == t.UPLOAD_COMPLETE:
        await ctx.aevent(f"disk {disk.disk_id}: managed disk {name} was already uploaded")
        return _imported(disk, existing, name, reused=True)
    kept = _sas_file(ctx, name)
    sas = None
    if existing is not None and state == "ActiveUpload" and ctx.checkpoint is not None:
        sas = await asyncio.to_thread(_kept_sas, kept, clients)
    if existing is not None and state != "ReadyToUpload" and sas is None:
        # ActiveUpload without this host's copy of the SAS (another host, or it was lost): Azure
        # grants no second write SAS, and revoking seals the disk half-written. Sealed without our
        # "complete" mark: its bytes can't be trusted or added to. Either way the upload starts
        # over into a new disk.
        if state == "ActiveUpload":
            await asyncio.to_thread(revoke, clients, name)
        await asyncio.to_thread(delete_disk, clients, name)
        await ctx.aevent(f"disk {disk.disk_id}: managed disk {name} was left {state} by an earlier attempt: "
                         "deleted, uploading again")
        existing = None
    # A disk still ReadyToUpload has had no byte written: the upload starts from the beginning.
    if existing is None:
        existing = await asyncio.to_thread(_create_disk, clients, name, size, tags)
    resuming = sas is not None
    if sas is None:
        sas = await asyncio.to_thread(grant, clients, name, "Write")
        await asyncio.to_thread(_keep_sas, kept, sas)
    source = open_local_source(str(disk.path))
    try:
        target = PageBlobTarget(sas, size, verify=clients.conn.verify, secrets=clients.conn.secrets, name=name)
        # A resumed disk holds the earlier attempt's pages: the copier must trust the checkpoint
        # rather than take the disk for a new, empty one (zero chunks stay unsent either way: the
        # same source never had data there).
        target.zero_initialized = not resuming
        allocated = sum(e.length for e in await asyncio.to_thread(source.extents))
        await ctx.aevent(
            f"disk {disk.disk_id}: uploading to managed disk {name} ({size:,} bytes, {allocated:,} allocated)"
            + (", resuming from the checkpoint of an attempt that ended holding its SAS" if resuming else ""))
        result = await copy_disk(
            source, target, on_progress=ctx.progress, bandwidth_limit=ctx.bandwidth_limit,
            chunk_size=MAX_PUT_PAGE, lanes=LANES, verify=bool(env.get("verify_upload", True)),
            checkpoint=ctx.checkpoint if resuming else None, durable=ctx.durable,
        )
    finally:
        source.close()
        # Revoking seals the upload; it runs on error and cancel too, so no SAS outlives the activity.
        await asyncio.shield(asyncio.to_thread(_revoke_quietly, clients, name, ctx, kept))
    await asyncio.to_thread(_mark_complete, clients, name, size, tags)
    await ctx.progress(TransferProgress(allocated, allocated, [(0, size)]))
    await ctx.aevent(
        f"disk {disk.disk_id}: managed disk {name} uploaded: {target.bytes_sent:,} bytes sent in "
        f"{target.pages_put} Put Page calls, {allocated:,} bytes allocated in the VHD of {size:,} bytes "
        f"({result.chunks_total} chunks, {result.chunks_resumed} resumed from the checkpoint)"
    )
    final = await asyncio.to_thread(_get_disk, clients, name)
    return _imported(disk, final, name, bytes_sent=target.bytes_sent, bytes_allocated=allocated,
                     put_page_calls=target.pages_put)


def _revoke_quietly(clients: AzureClients, name: str, ctx: TransferContext, kept: Path) -> None:
    try:
        revoke(clients, name)
    except Exception as exc:  # reported; cleanup revokes again by tag
        ctx.event(f"could not revoke the SAS of {name} yet: {getattr(exc, 'message', exc)} "
                  f"({error_code(exc) or type(exc).__name__})")
    else:
        kept.unlink(missing_ok=True)


def _sas_file(ctx: TransferContext, name: str) -> Path:
    return ctx.workdir / "upload" / f"{name}.write-sas"


def _keep_sas(path: Path, sas: str) -> None:
    """Written before the first Put Page, readable by the worker's user only."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="ascii") as f:
        f.write(sas)
        f.flush()
        os.fsync(f.fileno())
    tmp.replace(path)


def _kept_sas(path: Path, clients: AzureClients) -> str | None:
    """The SAS an earlier attempt on this host kept, if it still grants access (not expired, not
    revoked by a cleanup that ran meanwhile)."""
    from azure.storage.blob import BlobClient

    try:
        sas = path.read_text(encoding="ascii").strip()
        BlobClient.from_blob_url(sas, connection_verify=clients.conn.verify).get_blob_properties()
    except Exception:  # unreadable file, refused or expired SAS: the upload starts over
        return None
    return sas or None


def _imported(disk: DiskLocator, found: Any, name: str, **extra: Any) -> ImportedDisk:
    return ImportedDisk(disk_id=disk.disk_id, details={"managed_disk_id": str(found.id), "name": name, **extra})
