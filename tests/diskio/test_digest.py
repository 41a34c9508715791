"""The engine's digest names its algorithm; SHA-256- and BLAKE3-era checkpoints, logs and digests still read."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import blake3
import pytest
import xxhash

from diskio import digest
from diskio.copier import copy_disk
from diskio.local import LocalFileTarget, RawFileSource

MiB = 1024 * 1024
CHUNK = MiB

#: a heartbeat as the SHA-256-era engine left it in Temporal: done ranges only, no digest
OLD_HEARTBEAT = '{"bytes_done": 4194304, "checkpoint": [[0, 4194304]]}'


async def test_a_sha256_era_checkpoint_resumes_and_the_digest_names_xxh3(
    disk: Callable[..., Path], tmp_path: Path, same_bytes: Callable[[Path, Path], bool]
) -> None:
    src = disk(size=16 * MiB, runs=[(0, 6 * MiB), (10 * MiB, 2 * MiB)], seed=3)
    dst, log = tmp_path / "dst.raw", tmp_path / "chunks.log"
    # What the earlier attempt left on the target: the first 4 MiB, as its checkpoint says.
    with src.open("rb") as f, dst.open("wb") as g:
        g.write(f.read(4 * MiB))
    checkpoint = json.loads(OLD_HEARTBEAT)["checkpoint"]
    source, target = RawFileSource(src), LocalFileTarget(dst, 16 * MiB)
    try:
        result = await copy_disk(source, target, chunk_size=CHUNK, lanes=2, checkpoint=checkpoint, chunk_log=log)
    finally:
        source.close()
        target.close()
    assert same_bytes(src, dst)
    assert result.chunks_resumed == 4 and not result.checkpoint_discarded
    assert result.bytes_read == 4 * MiB  # 2 MiB after the checkpoint's end and the 2 MiB run
    fresh_dst = tmp_path / "fresh.raw"
    source, target = RawFileSource(src), LocalFileTarget(fresh_dst, 16 * MiB)
    try:
        fresh = await copy_disk(source, target, chunk_size=CHUNK, lanes=2)
    finally:
        source.close()
        target.close()
    assert result.digest is not None and result.digest == fresh.digest
    assert digest.untag(result.digest)[0] == "xxh3-128"
    # Every chunk log line names the algorithm, and its digest is the XXH3-128 of the chunk.
    first = log.read_text().splitlines()[0].split()
    offset, length, tagged = int(first[0]), int(first[1]), first[2]
    with src.open("rb") as f:
        f.seek(offset)
        expected = xxhash.xxh3_128_hexdigest(f.read(length))
    assert digest.untag(tagged) == ("xxh3-128", expected)


def test_a_bare_digest_is_read_as_sha256_and_never_equals_a_blake3_one() -> None:
    data = b"sterna" * 1000
    old = "5" * 64  # a per-disk digest as the SHA-256-era engine printed it: bare hex
    assert digest.untag(old) == ("sha256", old)
    assert digest.tag(xxhash.xxh3_128_hexdigest(data)) != old
    assert digest.untag(digest.tag("ab")) == ("xxh3-128", "ab")


def test_a_blake3_era_digest_keeps_its_name_and_never_equals_todays() -> None:
    data = b"sterna" * 1000
    old = "blake3:" + blake3.blake3(data).hexdigest()  # as the BLAKE3-era engine printed it
    assert digest.untag(old) == ("blake3", blake3.blake3(data).hexdigest())
    assert digest.tag(xxhash.xxh3_128_hexdigest(data)) != old


def test_todays_map_digests_are_xxh3_and_a_longer_digest_is_refused() -> None:
    data = b"sterna" * 1000
    assert digest.short_hasher("xxh3-128", 16)(data) == xxhash.xxh3_128_digest(data)
    assert digest.short_hasher("blake3", 16)(data) == blake3.blake3(data).digest(length=16)
    with pytest.raises(ValueError, match="at most 16"):
        digest.short_hasher("xxh3-128", 32)
