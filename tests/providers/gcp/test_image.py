"""Image creation on the GCP destination, retried: an earlier attempt's image is taken, not made twice."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

from core.models import DiskLocator, InstanceInfo
from providers.base import ActionContext, TransferContext, TransferProgress
from providers.gcp.deploy import MIGRATION_LABEL, create_image
from providers.gcp.provider import GcpProvider
from tests.peers.gcp import gce, gcp_conn_info, gcs_url

__all__ = ["gce", "gcp_conn_info", "gcs_url"]


def test_a_retried_insert_takes_its_own_earlier_image(gcp_conn_info: dict[str, Any], tmp_path: Path) -> None:
    path = tmp_path / "disk.raw"
    with open(path, "wb") as f:
        f.truncate(8 * 1024**2)
        f.write(os.urandom(1024**2))
    info = InstanceInfo(id="vm", name="vm", num_cpu=1, memory_mb=1024)
    disk = DiskLocator(disk_id="disk-0", size_bytes=path.stat().st_size, path=str(path))

    async def beat(p: TransferProgress) -> None:
        await asyncio.sleep(0)

    provider = GcpProvider(gcp_conn_info)
    imported = asyncio.run(provider.import_disk({}, info, disk, TransferContext(workdir=tmp_path, progress=beat),
                                                ActionContext(action_id="mig-image")))
    name = create_image(provider.conn, info, imported, "mig-image")
    # The worker died after the insert: the retry's insert is a 409, and the image is ours and READY.
    assert create_image(provider.conn, info, imported, "mig-image") == name
    images = provider.conn.compute("ImagesClient").list(project=provider.conn.project)
    assert [i.name for i in images if i.labels.get(MIGRATION_LABEL) == "mig-image"] == [name]
