"""The replica store: replica disks that Sterna keeps for destinations that can't keep them.

A transfer's replica disk must take in-place writes of the changed chunks at each execution, and
be read back by each deployment. OpenStack, Azure and GCP offer nothing that does both:

* Glance images are immutable once active: every execution would upload whole disks (and Sterna's
  peers have no Cinder, whose volumes would still need a host to attach them to for writing);
* an Azure managed disk takes writes only while it is being uploaded, never once it is sealed;
* a GCE image is immutable, and a persistent disk is written only by an instance it is attached to.

So their replica disks are raw files here, ``<STERNA_REPLICA_DIR>/<transfer>/<instance>/<disk>.raw``
(``core.settings``; default ``<data dir>/replicas``), written in place and compared by digest exactly
as the ``local`` provider's replicas are. A deployment overlays them, OS morphing writes into the
overlay, and the flattened result is uploaded in the destination's own format as a migration's disk
is: the cutover moves the whole disk to the cloud once, each execution only what changed.

The store must be the same directory for every worker (one worker host, or storage they all mount):
an execution writes it on the host that took the snapshot, a deployment reads it on any data worker.
"""

from __future__ import annotations

import hashlib
import re
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from core.errors import InvalidInput
from core.models import DiskLocator
from core.settings import get_settings
from providers.base import ReplicaProvider

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")


def _name(identifier: str) -> str:
    """One file name per id: made safe, with a digest of the id when that changed it (``vm a`` and
    ``vm_a`` stay two folders)."""
    safe = _UNSAFE.sub("_", identifier).lstrip(".")[:100]
    if safe == identifier:
        return safe
    return f"{safe}-{hashlib.blake2b(identifier.encode(), digest_size=4).hexdigest()}"


def transfer_folder(transfer_id: str) -> Path:
    """The folder of one transfer's replica disks."""
    if not transfer_id or _name(transfer_id) != transfer_id:
        raise InvalidInput(f"Invalid transfer id '{transfer_id}'")
    return get_settings().replica_store / transfer_id


def delete_transfer(transfer_id: str) -> list[str]:
    """Remove every replica disk of a transfer; returns what was removed. Idempotent, and needs no
    credentials: the API's ``delete-disks`` works after a migration's Keystone trust is gone."""
    folder = transfer_folder(transfer_id)
    if not folder.exists():
        return []
    shutil.rmtree(folder)
    return [f"Removed replica disks {folder}"]


class StoredReplicas(ReplicaProvider):
    """A destination whose replica disks are in the replica store (see the module docstring)."""

    def replica_disk(self, env: Mapping[str, Any], transfer_id: str, instance: str, disk_id: str,
                     size_bytes: int) -> DiskLocator:
        folder = transfer_folder(transfer_id) / _name(instance)
        folder.mkdir(parents=True, exist_ok=True)
        return DiskLocator(disk_id=disk_id, size_bytes=size_bytes, format="raw",
                           path=str(folder / f"{_name(disk_id)}.raw"))

    def delete_replica_disks(self, env: Mapping[str, Any], transfer_id: str) -> list[str]:
        return delete_transfer(transfer_id)
