"""The bootable Debian test guest; the builder lives in ``worker/guest.py`` (the demo uses it too)."""

from worker.guest import (
    OLD_NIC,
    ROOT_UUID,
    VMWARE_MAC,
    build_debian_guest,
    cached_debian_guest,
    export_stream_optimized_vmdk,
    recipe_hash,
)

__all__ = ["OLD_NIC", "ROOT_UUID", "VMWARE_MAC", "build_debian_guest", "cached_debian_guest",
           "export_stream_optimized_vmdk", "recipe_hash"]
