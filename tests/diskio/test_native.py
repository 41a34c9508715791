"""The native lane's library (``diskio.native``): built by the install, and hashing as ``diskio.digest`` does."""

from __future__ import annotations

import random

from diskio import digest, native


def test_the_native_lane_is_built_and_its_digest_is_the_engines() -> None:
    assert native.LANE is not None, "diskio/_lane.so is not built: `make` builds it (hatch_build.py)"
    rng = random.Random(7)
    for size in (0, 1, 240, 1024, 256 * 1024 + 3, 3 * 1024 * 1024):
        data = rng.randbytes(size)
        ours, engine = native.LANE.state(), digest.new()
        cuts = sorted(rng.randrange(size + 1) for _ in range(3))
        for start, end in zip([0, *cuts], [*cuts, size], strict=True):  # fed in pieces, as steps are
            ours.update(memoryview(bytearray(data))[start:end])
            engine.update(data[start:end])
        twin = ours.copy()
        assert ours.digest() == engine.digest() == twin.digest(), size
        ours.reset()
        assert ours.digest() == digest.new().digest()
