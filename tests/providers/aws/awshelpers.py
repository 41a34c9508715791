"""Shared helpers for the AWS provider tests (disks, export_info, a recording TransferContext)."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from core.models import DiskLocator, InstanceInfo
from providers.aws.ebs import EBS_BLOCK_SIZE, EbsSnapshotSource
from providers.base import TransferContext, TransferProgress

BLOCK = 512 * 1024


def make_disk(path: Path, size: int, pieces: dict[int, bytes]) -> Path:
    """A sparse raw image of ``size`` bytes with ``pieces`` written at their offsets."""
    with open(path, "wb") as f:
        f.truncate(size)
        for offset, data in pieces.items():
            f.seek(offset)
            f.write(data)
    return path


def pattern(seed: int, length: int) -> bytes:
    out = bytearray()
    counter = 0
    while len(out) < length:
        out += hashlib.sha256(f"{seed}-{counter}".encode()).digest()
        counter += 1
    return bytes(out[:length])


def export_info(disks: list[DiskLocator], firmware: str = "BIOS") -> InstanceInfo:
    return InstanceInfo.model_validate(
        {
            "id": "vm-1",
            "name": "web01",
            "num_cpu": 2,
            "memory_mb": 2048,
            "firmware_type": firmware,
            "devices": {
                "disks": [{"id": d.disk_id, "size_bytes": d.size_bytes} for d in disks],
                "nics": [{"network_name": "lan", "mac_address": "52:54:00:00:00:01"}],
            },
        }
    )


class Ctx:
    """A TransferContext whose progress callback records calls and can fail after N blocks."""

    def __init__(self, workdir: Path, checkpoint: Any = None, fail_after: int | None = None, exc: Any = None,
                 bandwidth_limit: int | None = None):
        self.updates: list[TransferProgress] = []
        self.events: list[str] = []
        self.fail_after = fail_after
        self.exc = exc
        self.ctx = TransferContext(
            workdir=workdir, progress=self.progress, checkpoint=checkpoint, event=self.events.append,
            bandwidth_limit=bandwidth_limit,
        )

    async def progress(self, p: TransferProgress) -> None:
        self.updates.append(p)
        if self.fail_after is not None and len(self.updates) >= self.fail_after:
            raise self.exc


def local_bytes(disk: DiskLocator) -> bytes:
    return Path(disk.path or "").read_bytes()


def snapshot_to_file(ebs: Any, snapshot_id: str, size: int, path: Path) -> int:
    """Write the snapshot's blocks into a sparse raw file of ``size`` bytes; returns the number of blocks."""
    kwargs: dict[str, Any] = {"SnapshotId": snapshot_id}
    blocks = 0
    with open(path, "wb") as out:
        out.truncate(size)
        while True:
            page = ebs.list_snapshot_blocks(**kwargs)
            for b in page["Blocks"]:
                data = ebs.get_snapshot_block(SnapshotId=snapshot_id, BlockIndex=b["BlockIndex"],
                                              BlockToken=b["BlockToken"])["BlockData"].read()
                out.seek(b["BlockIndex"] * EBS_BLOCK_SIZE)
                out.write(data)
                blocks += 1
            if not page.get("NextToken"):
                return blocks
            kwargs["NextToken"] = page["NextToken"]


def read_snapshot(ebs: Any, snapshot_id: str, size: int) -> bytes:
    src = EbsSnapshotSource(ebs, snapshot_id, size)
    return src.read(0, size)
