"""The engine's own digest: XXH3-128, named beside every digest it produces.

XXH3-128 (the ``xxhash`` wheel: SIMD, releases the GIL above 64 KiB) hashes at about 0.03
CPU-s per GiB on the bench machine against BLAKE3's 0.19 (128 KiB updates, in cache), which
more than halves verification's CPU. The digests guard against accidents (a bad write, bit
rot, a chunk that differs between attempts), not against an attacker who crafts collisions;
every write is checked byte for byte anyway (``diskio.lane``). SHA-256 stays
only where a target's API demands it (EBS direct, per 512 KiB block, in ``providers.aws.ebs``)
and only for what that target receives.

Every digest that leaves the engine says which algorithm made it: per-disk digests are
``"xxh3-128:<hex>"`` strings, and replica digest maps start with a small header (see
``encode_map``). Older maps are still understood (``decode_map``), so the first sync after an
upgrade stays incremental: tagged BLAKE3 maps (2026-12) and, before the header existed, bare
BLAKE2b ones. They are compared in their own algorithm once and replaced by a map in today's.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Protocol

import blake3
import xxhash

ALGORITHM = "xxh3-128"
#: bytes of one of the engine's digests
SIZE = 16
#: the engine's digest from 2026-11 to 2026-12: its per-disk digests read ``blake3:<hex>``,
#: and replica maps in it are still compared (in it) once
BLAKE3_ALGORITHM = "blake3"
#: the digest of maps stored before algorithms were recorded (diskio.replica, 2026-11)
LEGACY_MAP_ALGORITHM = "blake2b"
#: algorithms of maps that are still read (the first is today's)
MAP_ALGORITHMS = (ALGORITHM, BLAKE3_ALGORITHM, LEGACY_MAP_ALGORITHM)
_MAP_MAGIC = b"SDM1"


class Hasher(Protocol):
    def update(self, data: bytes | bytearray | memoryview, /) -> object: ...

    def digest(self) -> bytes: ...

    def copy(self) -> Hasher: ...


def new() -> Hasher:
    """A fresh hasher of the engine's algorithm (``SIZE``-byte digests)."""
    h: Hasher = xxhash.xxh3_128()
    return h


def tag(hexdigest: str, algorithm: str = ALGORITHM) -> str:
    """``"<algorithm>:<hex>"``: how a digest is shown, logged and compared."""
    return f"{algorithm}:{hexdigest}"


def untag(tagged: str) -> tuple[str, str]:
    """``(algorithm, hex)``; a bare hex string is a SHA-256 from before algorithms were recorded."""
    algorithm, sep, hexdigest = tagged.partition(":")
    return (algorithm, hexdigest) if sep else ("sha256", tagged)


def short_hasher(algorithm: str, size: int) -> Callable[[bytes | bytearray | memoryview], bytes]:
    """A function giving ``size``-byte digests of ``algorithm`` (for replica maps)."""
    if algorithm == ALGORITHM:
        if not 0 < size <= SIZE:
            raise ValueError(f"{ALGORITHM} digests are at most {SIZE} bytes, not {size}")
        return lambda data: xxhash.xxh3_128_digest(data)[:size]
    if algorithm == BLAKE3_ALGORITHM:
        return lambda data: blake3.blake3(data).digest(length=size)
    if algorithm == LEGACY_MAP_ALGORITHM:
        return lambda data: hashlib.blake2b(data, digest_size=size).digest()
    raise ValueError(f"unknown digest algorithm {algorithm!r}")


def encode_map(digests: bytes, size: int, algorithm: str = ALGORITHM) -> bytes:
    """A replica digest map: ``SDM1``, the algorithm's name and digest size, then the digests."""
    name = algorithm.encode("ascii")
    return _MAP_MAGIC + bytes([len(name)]) + name + bytes([size]) + digests


def decode_map(blob: bytes | None, count: int, size: int) -> tuple[str, bytes] | None:
    """``(algorithm, digests)`` of a map holding ``count`` digests of ``size`` bytes, else ``None``.

    A tagged map may be in today's algorithm or in BLAKE3 (before 2026-12); a bare map of exactly
    ``count * size`` bytes is a legacy BLAKE2b map. Anything else (another
    digest size, an unknown algorithm, a truncated blob) is ignored: the caller syncs in full.
    """
    if blob is None:
        return None
    if blob.startswith(_MAP_MAGIC) and len(blob) > len(_MAP_MAGIC) + 1:
        n = blob[len(_MAP_MAGIC)]
        start = len(_MAP_MAGIC) + 1
        name, rest = blob[start : start + n], blob[start + n :]
        if rest and rest[0] == size and len(rest) - 1 == count * size:
            algorithm = name.decode("ascii", errors="replace")
            if algorithm in MAP_ALGORITHMS:
                return algorithm, rest[1:]
            return None
    if len(blob) == count * size:
        return LEGACY_MAP_ALGORITHM, blob
    return None
