"""The engine's digest names its algorithm; SHA-256-era checkpoints, logs and digests are still understood."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import blake3

from diskio import digest
from diskio.copier import copy_disk
from diskio.local import LocalFileTarget, RawFileSource

MiB = 1024 * 1024
CHUNK = MiB

#: a heartbeat as the SHA-256-era engine left it in Temporal: done ranges only, no digest
OLD_HEARTBEAT = '{"bytes_done": 4194304, "checkpoint": [[0, 4194304]]}'


async def test_a_sha256_era_checkpoint_resumes_and_the_digest_names_blake3(
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
    assert digest.untag(result.digest)[0] == "blake3"
    # Every chunk log line names the algorithm, and its digest is the BLAKE3 of the chunk.
    first = log.read_text().splitlines()[0].split()
    offset, length, tagged = int(first[0]), int(first[1]), first[2]
    with src.open("rb") as f:
        f.seek(offset)
        expected = blake3.blake3(f.read(length)).hexdigest()
    assert digest.untag(tagged) == ("blake3", expected)


def test_a_bare_digest_is_read_as_sha256_and_never_equals_a_blake3_one() -> None:
    data = b"sterna" * 1000
    old = "5" * 64  # a per-disk digest as the SHA-256-era engine printed it: bare hex
    assert digest.untag(old) == ("sha256", old)
    assert digest.tag(blake3.blake3(data).hexdigest()) != old
    assert digest.untag(digest.tag("ab")) == ("blake3", "ab")
