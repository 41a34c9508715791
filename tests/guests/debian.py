"""The bootable Debian test guest; the builder lives in ``worker/guest.py`` (the demo uses it too).

``build_debian_guest`` here times real builds (not cache hits) for the suite's phase summary.
"""

from __future__ import annotations

import time
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
           "export_stream_optimized_vmdk", "recipe_hash"]


def build_debian_guest(*, log: bool = True, cloud_init: bool = False) -> Path:
    if cached_debian_guest(cloud_init):
        return guest.build_debian_guest(log=log, cloud_init=cloud_init)
    start = time.monotonic()
    try:
        return guest.build_debian_guest(log=log, cloud_init=cloud_init)
    finally:
        phases.record("guest builds", time.monotonic() - start)
