"""What a migrated Linux disk holds, read from inside it with libguestfs, the way the guest itself sees it.

Each answer comes from the guest's own tools, run in the appliance against its own files, so it holds
for any guest, not just for what Sterna wrote: ``lsinitramfs`` (initramfs-tools) lists each initrd's
kernel modules, and cloud-init's own config reader merges ``/etc/cloud/cloud.cfg`` with ``cloud.cfg.d``
into the ``datasource_list`` cloud-init will try at boot.

The drive is added read-only: libguestfs keeps the appliance's writes (a journal replay, ``lsinitramfs``'s
temporary files) in an overlay it throws away, so the disk that is inspected is the disk that boots next.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from osmorphing.libguestfs_guest import ImageSession

#: cloud-init's reading of its configuration, as ``cloud-init init`` does it before choosing a datasource
_DATASOURCES = ("python3 -c 'import json; from cloudinit import util; "
                "print(json.dumps(util.read_conf_with_confd(\"/etc/cloud/cloud.cfg\").get(\"datasource_list\")))'")


@dataclass
class Inside:
    #: kernel modules by initrd path (``/boot/initrd.img-<version>``), names with ``_`` for ``-``
    initrd_modules: dict[str, set[str]] = field(default_factory=dict)
    #: cloud-init's merged ``datasource_list`` (``None``: cloud-init is not installed)
    datasources: list[str] | None = None
    #: ``/etc/initramfs-tools/modules``: what initramfs-tools must load at boot, comments left out
    listed_modules: list[str] = field(default_factory=list)


def _module_names(listing: str) -> set[str]:
    names = set()
    for line in listing.splitlines():
        m = re.search(r"/([^/]+)\.ko(\.(xz|zst|gz))?$", line.strip())
        if m:
            names.add(m.group(1).replace("-", "_"))
    return names


def look_inside(disk: Path, fmt: str) -> Inside:
    # The project's own appliance set-up: the direct backend, TCG forced (this machine's KVM is unusable).
    with ImageSession(str(disk), fmt, readonly=True) as session:
        g = session.g
        [root] = g.inspect_os()
        mounts = g.inspect_get_mountpoints(root)
        for point in sorted(mounts, key=len):
            g.mount(mounts[point], point)
        inside = Inside()
        for name in g.ls("/boot"):
            if name.startswith("initrd.img-"):
                path = f"/boot/{name}"
                inside.initrd_modules[path] = _module_names(g.sh(f"lsinitramfs {path}"))
        if g.exists("/usr/bin/cloud-init"):
            inside.datasources = json.loads(g.sh(_DATASOURCES))
        if g.is_file("/etc/initramfs-tools/modules"):
            inside.listed_modules = [line.split()[0] for line in g.cat("/etc/initramfs-tools/modules").splitlines()
                                     if line.strip() and not line.lstrip().startswith("#")]
        return inside


def assert_morphed_for(inside: Inside, drivers: set[str], datasource: str) -> None:
    """What a morph for a cloud leaves that any guest would show: each initrd packs the platform's
    ``drivers``, ``/etc/initramfs-tools/modules`` lists them (loaded at boot, not only packed: Debian's
    generic initrd already packs most of them), and cloud-init reads ``datasource`` first."""
    assert inside.initrd_modules, "no initrd in /boot"
    for initrd, modules in inside.initrd_modules.items():
        assert not drivers - modules, (initrd, sorted(drivers - modules))
    assert not drivers - set(inside.listed_modules), inside.listed_modules
    assert inside.datasources is not None and inside.datasources[0] == datasource, inside.datasources
