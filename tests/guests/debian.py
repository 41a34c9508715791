"""The bootable Debian test guest; the builder lives in ``worker/guest.py`` (the demo uses it too).

On a fresh machine each variant takes minutes to build (debootstrap, then GRUB in a TCG appliance).
``prebuild`` starts the missing variants in one background thread when the session begins, and the
suite runs its TCG tests last (``tests/conftest.py``), so the builds overlap the other tests instead of
adding to them. ``build_debian_guest`` waits for a pending background build rather than starting a
second one, and times what the tests spent waiting for the suite's phase summary.

Every run also proves that each variant builds from an empty cache (``tests/guests/test_build.py``):
on a fresh machine the real builds are those proofs; on a warm one, ``prebuild`` builds each variant
once more, into an empty folder, in the same background thread.
"""

from __future__ import annotations

import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

from tests import phases
from worker import guest
from worker.guest import (
    OLD_NIC,
    ROOT_UUID,
    VMWARE_MAC,
    cached_debian_guest,
    export_stream_optimized_vmdk,
    recipe_hash,
)

__all__ = ["OLD_NIC", "ROOT_UUID", "VMWARE_MAC", "build_debian_guest", "cached_debian_guest",
           "export_stream_optimized_vmdk", "prebuild", "recipe_hash"]

_builder = ThreadPoolExecutor(max_workers=1, thread_name_prefix="guest-build")
_pending: dict[bool, Future[Path]] = {}
#: builds from an empty cache folder, by variant: what ``test_build.py`` inspects
from_empty: dict[bool, Future[Path]] = {}


def _build_in_background(cloud_init: bool, cache: Path | None) -> Path:
    start = time.monotonic()
    try:
        return guest.build_debian_guest(log=False, cloud_init=cloud_init, cache=cache)
    finally:
        phases.record("background guest builds", time.monotonic() - start)


def prebuild(*variants: bool, empty_cache: Path) -> None:
    """Start building the given variants (``cloud_init`` flags) in order, unless under way.

    A variant missing from the cache builds into it; a cached one builds again into ``empty_cache``
    (a new, empty folder), so that a build from scratch is proven on every run.
    """
    for cloud_init in variants:
        if cloud_init in from_empty:
            continue
        if cached_debian_guest(cloud_init):
            from_empty[cloud_init] = _builder.submit(_build_in_background, cloud_init, empty_cache)
        else:
            _pending[cloud_init] = from_empty[cloud_init] = _builder.submit(_build_in_background, cloud_init, None)


def build_debian_guest(*, log: bool = True, cloud_init: bool = False) -> Path:
    if cached_debian_guest(cloud_init):
        return guest.build_debian_guest(log=log, cloud_init=cloud_init)
    start = time.monotonic()
    try:
        pending = _pending.get(cloud_init)
        return pending.result() if pending else guest.build_debian_guest(log=log, cloud_init=cloud_init)
    finally:
        phases.record("guest builds", time.monotonic() - start)
