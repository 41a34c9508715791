"""The bootable Debian test guest; the builder lives in ``devstack/guest.py`` (the demo uses it too).

On a fresh machine each variant takes minutes to build (debootstrap, then GRUB in a TCG appliance).
``prebuild`` starts the missing variants in one background thread when the session begins, and the
suite runs its TCG tests last (``tests/conftest.py``), so the builds overlap the other tests instead of
adding to them. ``build_debian_guest`` waits for a pending background build rather than starting a
second one, and times what the tests spent waiting for the suite's phase summary.

The VMware exports ``guest_runs`` starts its migrations from (streamOptimized VMDKs: the cloud-init
guest, the two ``foreign_variants``, the vSphere simulator's disk) take minutes of single-threaded
compression and an appliance; ``exports`` keeps them beside the images, keyed by the image they were made
from and the code that made them, so a warm run copies them instead.

Every run also proves that each variant builds from an empty cache (``tests/guests/test_build.py``):
on a fresh machine the real builds are those proofs; on a warm one, ``prebuild`` builds each variant
once more, into an empty folder, in the same background thread.
"""

from __future__ import annotations

import hashlib
import inspect
import shutil
import subprocess
import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

from devstack import guest
from devstack.guest import (
    OLD_NIC,
    ROOT_UUID,
    VMWARE_MAC,
    cache_root,
    cached_debian_guest,
    export_stream_optimized_vmdk,
    recipe_hash,
)
from tests import phases
from tests.peers import cache_lock

__all__ = ["OLD_NIC", "ROOT_UUID", "VMWARE_MAC", "build_debian_guest", "cached_debian_guest",
           "export_stream_optimized_vmdk", "exports", "prebuild", "recipe_hash"]

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


MARKER_UNIT = "/etc/systemd/system/multi-user.target.wants/sterna-report-ip.service"


def foreign_variants(raw: Path, folder: Path) -> dict[str, Path]:
    """Copies of the test guest that look like guests made outside this project, edited in one appliance.

    * ``no-marker``: ``sterna-report-ip`` is not started, so the guest prints nothing of ours on its
      console (a boot check must prove its boot from generic signals);
    * ``root-by-device``: no marker either, and GRUB boots the root as ``/dev/sda2``, the SCSI name
      VMware-made guests often use: on a virtio disk that device never appears, so an unmorphed boot
      stops in the initramfs (``ALERT! /dev/sda2 does not exist``).
    """
    from osmorphing.libguestfs_guest import load_guestfs

    folder.mkdir(parents=True, exist_ok=True)
    copies = {name: folder / f"{name}.raw" for name in ("no-marker", "root-by-device")}
    for copy in copies.values():
        subprocess.run(["cp", "--sparse=always", str(raw), str(copy)], check=True)
    g = load_guestfs().GuestFS(python_return_dict=True)
    g.set_backend("direct")
    g.set_backend_settings(["force_tcg"])
    try:
        for copy in copies.values():
            g.add_drive_opts(str(copy), format="raw")
        g.launch()
        for device in ("/dev/sda2", "/dev/sdb2"):
            g.mount(device, "/")
            g.rm(MARKER_UNIT)
            if device == "/dev/sdb2":
                cfg = g.read_file("/boot/grub/grub.cfg").decode()
                g.write("/boot/grub/grub.cfg", cfg.replace(f"root=UUID={ROOT_UUID}", "root=/dev/sda2"))
            g.umount("/")
        g.shutdown()
    finally:
        g.close()
    return copies


#: the exports ``exports`` knows: name -> (cloud-init variant?, the files it writes)
EXPORTS = {"cloud-init": (True, ("disk.vmdk",)), "foreign": (False, ("no-marker.vmdk", "root-by-device.vmdk")),
           "vsphere": (False, ("disk.vmdk",))}


def _vsphere_vmdk(raw: Path, dest: Path) -> None:
    # What the simulator's VM is staged with: a streamOptimized VMDK, qemu-img's default adapter type.
    subprocess.run(["qemu-img", "convert", "-f", "raw", "-O", "vmdk", "-o", "subformat=streamOptimized",
                    str(raw), str(dest)], check=True)


def _export(name: str, raw: Path, folder: Path) -> None:
    if name == "cloud-init":
        export_stream_optimized_vmdk(raw, folder / "disk.vmdk")
    elif name == "vsphere":
        _vsphere_vmdk(raw, folder / "disk.vmdk")
    else:
        for variant, copy in foreign_variants(raw, folder / "raw").items():
            export_stream_optimized_vmdk(copy, folder / f"{variant}.vmdk")
        shutil.rmtree(folder / "raw")


def _export_key(name: str, raw: Path) -> str:
    """The image (its recipe, and this build of it: a rebuilt image has a new mtime) and the code used."""
    h = hashlib.sha256(f"{name} {raw.name} {raw.parent.name} {raw.stat().st_mtime_ns}".encode())
    for code in (_export, _vsphere_vmdk, export_stream_optimized_vmdk, foreign_variants):
        h.update(inspect.getsource(code).encode())
    return h.hexdigest()[:16]


def exports(name: str) -> dict[str, Path]:
    """The VMDK files of export ``name`` (see ``EXPORTS``), made from its guest image once per key.

    Cached files are read by the caller's copies only (``create_vmware_vm(vmdk=...)`` copies them).
    """
    cloud_init, files = EXPORTS[name]
    raw = build_debian_guest(cloud_init=cloud_init)
    root = cache_root().parent / "guest-exports"
    done = root / f"{name}-{_export_key(name, raw)}"
    with cache_lock(root / ".lock"):
        if not done.is_dir():
            partial = root / f"{done.name}.partial"
            shutil.rmtree(partial, ignore_errors=True)
            partial.mkdir(parents=True)
            _export(name, raw, partial)
            partial.rename(done)
    return {f.removesuffix(".vmdk"): done / f for f in files}
