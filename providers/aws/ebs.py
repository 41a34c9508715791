"""EBS direct APIs as ``diskio`` sources and targets.

A snapshot is an array of fixed 512 KiB blocks addressed by index (offset / 524288).
Blocks never written read as zeros and are simply absent from ``ListSnapshotBlocks``, so
the block list is the source's extent map, and the target never writes all-zero blocks.
"""

from __future__ import annotations

import base64
import hashlib
import threading
from collections import OrderedDict
from collections.abc import Iterable
from typing import Any

from core.errors import IntegrityError, InvalidInput
from diskio.base import DiskSource, DiskTarget, Extent
from providers.aws.errors import aws_errors, error_code

#: EBS direct block size. Fixed by the service; we don't trust a reported ``BlockSize``
#: because moto reports 512 while storing whatever 512 KiB blocks it was given.
EBS_BLOCK_SIZE = 512 * 1024
GIB = 1024**3
_ZERO_BLOCK = bytes(EBS_BLOCK_SIZE)


def sha256_b64(data: bytes) -> str:
    """Base64 SHA-256, the checksum form the EBS direct APIs use."""
    return base64.b64encode(hashlib.sha256(data).digest()).decode("ascii")


def volume_size_gib(size_bytes: int) -> int:
    """Smallest whole GiB that holds ``size_bytes`` (EBS sizes are whole GiB, at least 1)."""
    return max(1, -(-size_bytes // GIB))


def blocks_to_extents(indexes: Iterable[int], size: int) -> list[Extent]:
    """Merge block indexes into sorted extents clipped to ``size``."""
    extents: list[Extent] = []
    start = prev = None
    for index in sorted(set(indexes)):
        if prev is not None and index == prev + 1:
            prev = index
            continue
        if start is not None and prev is not None:
            extents.append(Extent(start * EBS_BLOCK_SIZE, (prev + 1 - start) * EBS_BLOCK_SIZE))
        start = prev = index
    if start is not None and prev is not None:
        extents.append(Extent(start * EBS_BLOCK_SIZE, (prev + 1 - start) * EBS_BLOCK_SIZE))
    clipped = []
    for ext in extents:
        if ext.offset >= size:
            break
        clipped.append(Extent(ext.offset, min(ext.end, size) - ext.offset))
    return clipped


class EbsSnapshotSource(DiskSource):
    """Reads a completed snapshot with ListSnapshotBlocks/GetSnapshotBlock."""

    def __init__(self, ebs: Any, snapshot_id: str, size: int, secrets: Iterable[str | None] = ()) -> None:
        self._ebs = ebs
        self.snapshot_id = snapshot_id
        self._size = size
        self._secrets = tuple(secrets)
        self._lock = threading.Lock()
        self._tokens: dict[int, str] | None = None
        # A few recent blocks: a reader whose chunks don't line up with 512 KiB would
        # otherwise fetch the block they share twice.
        self._recent: OrderedDict[int, bytes] = OrderedDict()
        #: GetSnapshotBlock calls made (for tests and progress messages)
        self.blocks_fetched = 0

    @property
    def size(self) -> int:
        return self._size

    def _list_blocks(self) -> dict[int, str]:
        tokens: dict[int, str] = {}
        kwargs: dict[str, Any] = {"SnapshotId": self.snapshot_id, "MaxResults": 10000}
        with aws_errors(f"listing blocks of snapshot {self.snapshot_id}", self._secrets):
            while True:
                page = self._ebs.list_snapshot_blocks(**kwargs)
                for block in page.get("Blocks", []):
                    tokens[int(block["BlockIndex"])] = block["BlockToken"]
                token = page.get("NextToken")
                if not token:
                    break
                kwargs["NextToken"] = token
        return tokens

    def _block_tokens(self, refresh: bool = False) -> dict[int, str]:
        with self._lock:
            if self._tokens is None or refresh:
                self._tokens = self._list_blocks()
            return self._tokens

    def extents(self) -> list[Extent]:
        return blocks_to_extents(self._block_tokens(), self._size)

    def block_indexes(self) -> set[int]:
        """Indexes of the blocks the snapshot lists (the rest read as zeros)."""
        return set(self._block_tokens())

    def _get_block(self, index: int) -> bytes:
        tokens = self._block_tokens()
        if index not in tokens:
            return _ZERO_BLOCK
        with self._lock:
            if index in self._recent:
                return self._recent[index]
        data = self._fetch(index, tokens)
        with self._lock:
            self._recent[index] = data
            while len(self._recent) > 8:
                self._recent.popitem(last=False)
        return data

    def _fetch(self, index: int, tokens: dict[int, str]) -> bytes:
        action = f"reading block {index} of snapshot {self.snapshot_id}"
        try:
            with aws_errors(action, self._secrets):
                try:
                    resp = self._ebs.get_snapshot_block(
                        SnapshotId=self.snapshot_id, BlockIndex=index, BlockToken=tokens[index]
                    )
                except Exception as exc:
                    # Block tokens expire; one fresh listing is the documented remedy.
                    if error_code(exc) != "ValidationException":
                        raise
                    tokens = self._block_tokens(refresh=True)
                    resp = self._ebs.get_snapshot_block(
                        SnapshotId=self.snapshot_id, BlockIndex=index, BlockToken=tokens[index]
                    )
                data = bytes(resp["BlockData"].read())
        finally:
            with self._lock:
                self.blocks_fetched += 1
        checksum = resp.get("Checksum")
        if checksum and resp.get("ChecksumAlgorithm", "SHA256") == "SHA256" and sha256_b64(data) != checksum:
            raise IntegrityError(f"{action}: SHA-256 mismatch")
        if len(data) < EBS_BLOCK_SIZE:
            data += bytes(EBS_BLOCK_SIZE - len(data))
        return data

    def read(self, offset: int, length: int) -> bytes:
        length = max(0, min(length, self._size - offset))
        out = bytearray()
        pos = offset
        while pos < offset + length:
            index, skip = divmod(pos, EBS_BLOCK_SIZE)
            take = min(EBS_BLOCK_SIZE - skip, offset + length - pos)
            out += self._get_block(index)[skip : skip + take]
            pos += take
        return bytes(out)


class EbsSnapshotTarget(DiskTarget):
    """Writes a pending snapshot (from StartSnapshot) with checksummed PutSnapshotBlock calls.

    ``flush`` completes the snapshot. CompleteSnapshot needs the number of blocks written
    over the snapshot's whole life, so a resumed upload passes ``previously_written``.
    """

    granularity = EBS_BLOCK_SIZE
    alignment = EBS_BLOCK_SIZE
    max_write = 16 * EBS_BLOCK_SIZE
    # Not ``zero_initialized``: a resumed upload writes into the snapshot an earlier attempt
    # started, so its checkpoint must be honoured. Zeros are never written (see write_zeroes).
    zero_initialized = False
    # AWS has the block once PutSnapshotBlock returns: nothing to sync before a checkpoint claims it
    writes_survive_exit = True

    def __init__(
        self,
        ebs: Any,
        snapshot_id: str,
        size: int,
        previously_written: int = 0,
        secrets: Iterable[str | None] = (),
    ) -> None:
        self._ebs = ebs
        self.snapshot_id = snapshot_id
        self._size = size
        self._secrets = tuple(secrets)
        self._lock = threading.Lock()
        self.previously_written = previously_written
        #: block indexes written by this object
        self.written: set[int] = set()
        #: all-zero blocks this object was asked to write and skipped
        self.zero_skipped = 0
        self.completed = False
        self._reader: EbsSnapshotSource | None = None

    @property
    def size(self) -> int:
        return self._size

    def write(self, offset: int, data: bytes) -> None:
        if offset % EBS_BLOCK_SIZE:
            raise InvalidInput(f"EBS writes must be 512 KiB aligned, got offset {offset}")
        if offset + len(data) > self._size:
            raise InvalidInput(f"write past the end of snapshot {self.snapshot_id}")
        view = memoryview(data)
        for start in range(0, len(data), EBS_BLOCK_SIZE):
            block = bytes(view[start : start + EBS_BLOCK_SIZE])
            if len(block) < EBS_BLOCK_SIZE:
                # The disk's tail: EBS only takes whole blocks, the rest reads as zeros anyway.
                block += bytes(EBS_BLOCK_SIZE - len(block))
            index = (offset + start) // EBS_BLOCK_SIZE
            if block == _ZERO_BLOCK:
                with self._lock:
                    self.zero_skipped += 1
                continue
            self._put(index, block)

    def _put(self, index: int, block: bytes) -> None:
        with aws_errors(f"writing block {index} of snapshot {self.snapshot_id}", self._secrets):
            self._ebs.put_snapshot_block(
                SnapshotId=self.snapshot_id,
                BlockIndex=index,
                BlockData=block,
                DataLength=EBS_BLOCK_SIZE,
                Checksum=sha256_b64(block),
                ChecksumAlgorithm="SHA256",
            )
        with self._lock:
            self.written.add(index)

    def write_zeroes(self, offset: int, length: int) -> None:
        """Nothing to do: a snapshot's unwritten blocks read as zeros, and the only blocks an
        earlier attempt wrote into this snapshot came from the same disk at the same offsets."""

    @property
    def readable(self) -> bool:
        """A snapshot can be read back (GetSnapshotBlock) only once it is completed."""
        return self.completed

    def read(self, offset: int, length: int) -> bytes:
        buf = bytearray(max(0, min(length, self._size - offset)))
        self.readinto(offset, memoryview(buf))
        return bytes(buf)

    def readinto(self, offset: int, view: memoryview) -> int:
        if not self.completed:
            raise InvalidInput(f"snapshot {self.snapshot_id} is still pending: it cannot be read back")
        if self._reader is None:
            self._reader = EbsSnapshotSource(self._ebs, self.snapshot_id, self._size, self._secrets)
        data = self._reader.read(offset, len(view))
        view[: len(data)] = data
        return len(data)

    def resumed(self, offset: int, length: int) -> None:
        """Blocks an earlier attempt put into this pending snapshot count in ``flush``'s total."""
        first, end = offset // EBS_BLOCK_SIZE, -(-(offset + length) // EBS_BLOCK_SIZE)
        with self._lock:
            self.previously_written += end - first

    @property
    def changed_blocks_count(self) -> int:
        return self.previously_written + len(self.written)

    def sync(self) -> None:
        """Nothing: every acknowledged PutSnapshotBlock is durable (``flush`` completes the snapshot)."""

    def flush(self) -> None:
        """CompleteSnapshot. The aggregate checksum is left out on purpose: per-block SHA-256
        is checked by AWS on every PutSnapshotBlock, and a resumed upload no longer has the
        earlier blocks' checksums."""
        if self.completed:
            return
        with aws_errors(f"completing snapshot {self.snapshot_id}", self._secrets):
            self._ebs.complete_snapshot(
                SnapshotId=self.snapshot_id, ChangedBlocksCount=self.changed_blocks_count
            )
        self.completed = True
