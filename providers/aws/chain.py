"""A replica snapshot read back as the whole disk it stands for.

AWS makes a child snapshot read as the whole disk: ListSnapshotBlocks on it lists its ancestors'
blocks too. A service that keeps no inheritance (moto 5 ignores ``ParentSnapshotId``) lists only
the blocks written into each snapshot. ``ChainSource`` is right for both: each block comes from
the newest snapshot of the chain that lists it.

The chain is walked through the parent each replica snapshot names in its tags
(``tags.PARENT_TAG``). The walk stops at a snapshot that lists more blocks than were written into
it (``tags.BLOCKS_TAG``): it lists its ancestors' blocks as well, so nothing older can add one.
On AWS that is the first snapshot listed (unless its execution rewrote every block its parent had,
when one more listing is needed); a snapshot tagged before those tags existed ends the walk.
"""

from __future__ import annotations

from core.errors import InvalidInput
from diskio.base import DiskSource, Extent
from providers.aws import tags as t
from providers.aws.ebs import EBS_BLOCK_SIZE, EbsSnapshotSource, blocks_to_extents
from providers.aws.errors import aws_errors
from providers.aws.session import AwsClients

#: a chain longer than this is a loop in the tags, not a transfer's history
MAX_CHAIN = 100_000


class ChainSource(DiskSource):
    """Guest bytes of a replica snapshot, composed from its chain (see the module docstring)."""

    io_size = EBS_BLOCK_SIZE

    def __init__(self, layers: list[EbsSnapshotSource], owners: dict[int, EbsSnapshotSource], size: int) -> None:
        #: the snapshots read, newest first
        self.layers = layers
        self._owners = owners
        self._size = size

    @property
    def size(self) -> int:
        return self._size

    def extents(self) -> list[Extent]:
        return blocks_to_extents(self._owners, self._size)

    def read(self, offset: int, length: int) -> bytes:
        length = max(0, min(length, self._size - offset))
        out = bytearray()
        pos = offset
        while pos < offset + length:
            index, skip = divmod(pos, EBS_BLOCK_SIZE)
            take = min(EBS_BLOCK_SIZE - skip, offset + length - pos)
            owner = self._owners.get(index)
            out += owner.read(pos, take) if owner is not None else bytes(take)
            pos += take
        return bytes(out)

    @property
    def blocks_fetched(self) -> int:
        return sum(layer.blocks_fetched for layer in self.layers)


def _tags(clients: AwsClients, snapshot_id: str) -> dict[str, str]:
    with aws_errors(f"describing replica snapshot {snapshot_id}", clients.conn.secrets):
        found = clients.ec2.describe_snapshots(SnapshotIds=[snapshot_id])["Snapshots"]
    return t.as_dict(found[0].get("Tags")) if found else {}


def open_chain(clients: AwsClients, snapshot_id: str, size: int) -> ChainSource:
    """List the chain that ends at ``snapshot_id`` (blocking: one listing per snapshot walked)."""
    layers: list[EbsSnapshotSource] = []
    owners: dict[int, EbsSnapshotSource] = {}
    current: str | None = snapshot_id
    while current:
        if len(layers) >= MAX_CHAIN or any(layer.snapshot_id == current for layer in layers):
            raise InvalidInput(f"replica snapshot {snapshot_id}: its parent tags loop at {current}")
        layer = EbsSnapshotSource(clients.ebs, current, size, clients.conn.secrets)
        listed = layer.block_indexes()
        layers.append(layer)
        for index in listed:
            owners.setdefault(index, layer)
        tags = _tags(clients, current)
        written = tags.get(t.BLOCKS_TAG)
        if written is not None and written.isdigit() and len(listed) > int(written):
            break  # it lists inherited blocks: the service composes the chain itself
        current = tags.get(t.PARENT_TAG)
    return ChainSource(layers, owners, size)
