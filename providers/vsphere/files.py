"""Local files as ``RangeReader``s (a spooled download, a member inside an OVA tar)."""

from __future__ import annotations

import os
from dataclasses import dataclass

from core.errors import TransferError


@dataclass(frozen=True)
class FileSlice:
    """``length`` bytes at ``offset`` of a local file; thread-safe positional reads."""

    path: str
    offset: int
    length: int

    @property
    def size(self) -> int:
        return self.length

    @property
    def bytes_fetched(self) -> int:
        return 0  # nothing crosses the network

    def read_at(self, offset: int, length: int) -> bytes:
        """Bytes ``[offset, offset+length)`` of the slice, short only at its end."""
        length = max(0, min(length, self.length - offset))
        if length == 0:
            return b""
        fd = os.open(self.path, os.O_RDONLY)
        try:
            data = os.pread(fd, length, self.offset + offset)
        finally:
            os.close(fd)
        if len(data) != length:
            raise TransferError(f"{self.path} is shorter than expected (truncated?)")
        return data

    def close(self) -> None:
        """Nothing is held open between reads."""
