"""The GCS upload of the GCP destination: an attempt that dies mid-upload, then one that resumes.

A killed worker runs no cancel handler: its upload session stays open in GCS with what was
sent, and the session URI stays in the instance's scratch folder. The attempt here dies the
same way (an error from its heartbeat, not a cancel), and the next one must send only the rest.
"""

from __future__ import annotations

import asyncio
import gzip
import io
import json
import os
import tarfile
from pathlib import Path
from typing import Any

import pytest
import requests

from core.models import DiskLocator, InstanceInfo
from providers.base import ActionContext, TransferContext, TransferProgress
from providers.gcp.provider import GcpProvider
from tests.peers.gcp import gce, gcp_conn_info, gcs_download, gcs_objects, gcs_url

__all__ = ["gce", "gcp_conn_info", "gcs_url"]
MIB = 1024 * 1024


class WorkerDied(Exception):
    pass


def _disk(path: Path) -> bytes:
    with open(path, "wb") as f:
        f.truncate(32 * MIB)
        f.seek(2 * MIB)
        f.write(os.urandom(6 * MIB))
    return path.read_bytes()


async def test_upload_resumes_from_what_gcs_holds(gcp_conn_info: dict[str, Any], gcs_url: str,
                                                  tmp_path: Path) -> None:
    raw = _disk(tmp_path / "disk.raw")
    disk = DiskLocator(disk_id="disk-0", size_bytes=len(raw), path=str(tmp_path / "disk.raw"))
    info = InstanceInfo(id="vm", name="vm", num_cpu=1, memory_mb=1024)
    env: dict[str, Any] = {}
    action = ActionContext(action_id="mig-resume", network_map={"default": "app"})
    events: list[str] = []
    beats: list[TransferProgress] = []

    async def dies_at_first_beat(p: TransferProgress) -> None:
        beats.append(p)
        raise WorkerDied()

    # 1 MiB/s: the ~6 MiB tarball takes 6 s, the first heartbeat comes after 1 s.
    first = TransferContext(workdir=tmp_path, progress=dies_at_first_beat, bandwidth_limit=MIB,
                            event=events.append)
    with pytest.raises(WorkerDied):
        await GcpProvider(gcp_conn_info).import_disk(env, info, disk, first, action)
    assert 0 < beats[-1].bytes_done < beats[-1].bytes_total
    assert not gcs_objects(gcs_url, gcp_conn_info["bucket"]), "no object before the upload is complete"

    async def beat(p: TransferProgress) -> None:
        await asyncio.sleep(0)

    second = TransferContext(workdir=tmp_path, progress=beat, event=events.append)
    imported = await GcpProvider(gcp_conn_info).import_disk(env, info, disk, second, action)
    resumed = imported.details["resumed_bytes"]
    print(f"resumed after {resumed:,} of {imported.details['tarball_bytes']:,} tarball bytes")
    assert resumed > 0, events
    assert any("resuming after" in e for e in events)
    tarball = gcs_download(gcs_url, gcp_conn_info["bucket"], imported.details["object"])
    with tarfile.open(fileobj=gzip.GzipFile(fileobj=io.BytesIO(tarball)), mode="r|") as tf:
        member = tf.next()
        assert member is not None and member.size == 1024**3
        reader = tf.extractfile(member)
        assert reader is not None and reader.read(len(raw)) == raw


async def test_cancel_stops_the_upload_and_leaves_no_object(gcp_conn_info: dict[str, Any], gcs_url: str,
                                                            tmp_path: Path) -> None:
    """On GCS the cancel's DELETE of the session also frees what it holds; the emulator does not
    implement that DELETE, so this checks what it can: the upload stopped unfinished, no object."""
    _disk(tmp_path / "disk.raw")
    disk = DiskLocator(disk_id="disk-0", size_bytes=32 * MIB, path=str(tmp_path / "disk.raw"))
    info = InstanceInfo(id="vm", name="vm", num_cpu=1, memory_mb=1024)

    async def cancelled(p: TransferProgress) -> None:
        raise asyncio.CancelledError()

    ctx = TransferContext(workdir=tmp_path, progress=cancelled, bandwidth_limit=2 * MIB)
    with pytest.raises(asyncio.CancelledError):
        await GcpProvider(gcp_conn_info).import_disk({}, info, disk, ctx, ActionContext(action_id="mig-cancel"))
    [state] = (tmp_path / "gcs-upload").glob("*.json")
    session = json.loads(state.read_text())["session"]
    status = await asyncio.to_thread(requests.put, session, data=b"", headers={"Content-Range": "bytes */*"},
                                     timeout=30)
    assert status.status_code not in (200, 201), "the cancelled upload was finalized"
    assert not gcs_objects(gcs_url, gcp_conn_info["bucket"])
