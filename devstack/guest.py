"""A real, bootable Debian guest that looks like it was made on VMware.

``build_debian_guest()`` returns a raw GPT disk with:

* partition 1: BIOS boot partition (GRUB's core image), partition 2: ext4 root;
* Debian bookworm with systemd, a kernel, initramfs-tools, GRUB (BIOS), open-vm-tools, ifupdown;
* ``/etc/network/interfaces`` with a *static* address on ``ens192`` (VMware's first vmxnet3 slot) and a
  systemd ``.link`` file pinning the name ``ens192`` to a VMware MAC (``00:50:56:…``);
* initramfs-tools set to ``MODULES=dep`` for rebuilds (the shipped initrd is the generic one; see FILES);
* ``console=ttyS0`` on the kernel command line, so even an unmorphed boot is observable on serial;
* ``sterna-report-ip.service``: after boot it prints ``STERNA-GUEST-IPV4 <dev> <addr/len>`` on the serial
  console, or ``STERNA-GUEST-NO-IPV4`` with the link names when no address came within 60 s.

The image is cached under ``~/.cache/sterna/guests/<recipe-hash>/disk.raw``; the hash covers everything
that shapes the image (suite, packages, written files, this builder's version), so a changed recipe
builds a new image and an unchanged one is reused. Building needs root (debootstrap), network access to
deb.debian.org and libguestfs (GRUB is installed from inside the appliance). It takes a few minutes.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import IO

SUITE = "bookworm"
MIRROR = "http://deb.debian.org/debian"
PACKAGES = [
    "systemd-sysv",
    "udev",
    "kmod",
    "linux-image-amd64",
    "initramfs-tools",
    "grub-pc-bin",
    "grub2-common",
    "open-vm-tools",
    "ifupdown",
    "isc-dhcp-client",
    "iproute2",
]
DISK_SIZE = 3 * 1024**3
ROOT_START_SECTOR = 4096  # 2 MiB: room for the BIOS boot partition
ROOT_UUID = "5a1e0c55-7e57-4a4e-9d1b-000000000002"
VMWARE_MAC = "00:50:56:9a:3c:01"
OLD_NIC = "ens192"
BUILDER_VERSION = 3

_REPORT_SCRIPT = """#!/bin/sh
# Test-guest probe: tell the serial console whether the network came up, and with which address.
for i in $(seq 1 60); do
    addr=$(ip -4 -o addr show scope global | awk '{print $2" "$4; exit}')
    if [ -n "$addr" ]; then
        echo "STERNA-GUEST-IPV4 $addr" > /dev/ttyS0
        exit 0
    fi
    sleep 1
done
echo "STERNA-GUEST-NO-IPV4 links: $(ls /sys/class/net | tr '\\n' ' ')" > /dev/ttyS0
"""

_REPORT_UNIT = """[Unit]
Description=Report the guest's IPv4 address on the serial console (Sterna test guest)
After=network.target

[Service]
Type=oneshot
ExecStart=/usr/local/sbin/sterna-report-ip

[Install]
WantedBy=multi-user.target
"""

FILES: dict[str, str] = {
    "/etc/hostname": "vmware-guest\n",
    "/etc/hosts": "127.0.0.1 localhost\n127.0.1.1 vmware-guest\n",
    "/etc/fstab": f"# <file system> <mount point> <type> <options> <dump> <pass>\n"
    f"UUID={ROOT_UUID} / ext4 errors=remount-ro 0 1\n",
    "/etc/network/interfaces": (
        "# This file describes the network interfaces available on your system\n"
        "source /etc/network/interfaces.d/*\n\n"
        "auto lo\niface lo inet loopback\n\n"
        f"allow-hotplug {OLD_NIC}\n"
        f"iface {OLD_NIC} inet static\n"
        "    address 192.168.10.50/24\n"
        "    gateway 192.168.10.1\n"
    ),
    f"/etc/systemd/network/10-{OLD_NIC}.link": (
        f"[Match]\nMACAddress={VMWARE_MAC}\n\n[Link]\nName={OLD_NIC}\n"
    ),
    "/etc/default/grub": (
        "GRUB_DEFAULT=0\nGRUB_TIMEOUT=1\nGRUB_DISTRIBUTOR=`lsb_release -i -s 2> /dev/null || echo Debian`\n"
        'GRUB_CMDLINE_LINUX_DEFAULT=""\n'
        'GRUB_CMDLINE_LINUX="console=tty0 console=ttyS0,115200n8"\n'
        "GRUB_TERMINAL=console\n"
    ),
    # The initrd the guest ships with stays Debian's generic one (MODULES=most, built by debootstrap), so
    # the unmorphed disk still boots on virtio. This only shapes the *rebuild* that OS morphing runs in
    # the libguestfs appliance: with ``dep`` it packs the root device's drivers plus the modules the
    # morph lists, instead of every storage driver, which takes a few minutes under TCG rather than a
    # quarter of an hour. The boot checks attach the disk on a bus the appliance doesn't use (virtio-blk,
    # NVMe), so they still prove the morph's own module list, not an accident of the appliance.
    "/etc/initramfs-tools/conf.d/modules-dep.conf": "MODULES=dep\n",
    "/usr/local/sbin/sterna-report-ip": _REPORT_SCRIPT,
    "/etc/systemd/system/sterna-report-ip.service": _REPORT_UNIT,
}
EXECUTABLES = {"/usr/local/sbin/sterna-report-ip"}
SYMLINKS = {
    "/etc/systemd/system/multi-user.target.wants/sterna-report-ip.service": (
        "/etc/systemd/system/sterna-report-ip.service"
    ),
}


#: the cloud-ready variant: what a VMware template prepared for cloud migration carries
# python3-cffi-backend: python3-cryptography depends on virtual packages it provides, which
# debootstrap does not resolve.
CLOUD_INIT_PACKAGES = ["cloud-init", "python3-cffi-backend"]


def packages(cloud_init: bool = False) -> list[str]:
    return PACKAGES + (CLOUD_INIT_PACKAGES if cloud_init else [])


def recipe(cloud_init: bool = False) -> dict[str, object]:
    """Everything that determines the image's content; its hash is the cache key."""
    return {
        "suite": SUITE,
        "packages": packages(cloud_init),
        "disk_size": DISK_SIZE,
        "root_start": ROOT_START_SECTOR,
        "root_uuid": ROOT_UUID,
        "files": FILES,
        "symlinks": SYMLINKS,
        "builder": BUILDER_VERSION,
    }


def recipe_hash(cloud_init: bool = False) -> str:
    return hashlib.sha256(json.dumps(recipe(cloud_init), sort_keys=True).encode()).hexdigest()[:16]


def cache_root(override: Path | None = None) -> Path:
    if override is not None:
        return override
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "sterna" / "guests"


def cached_debian_guest(cloud_init: bool = False, cache: Path | None = None) -> Path | None:
    """The cached image for the current recipe, or ``None`` when it has not been built."""
    disk = cache_root(cache) / recipe_hash(cloud_init) / "disk.raw"
    return disk if disk.is_file() else None


def build_debian_guest(*, log: bool = True, cloud_init: bool = False, cache: Path | None = None) -> Path:
    """Return the cached bootable Debian guest disk (raw), building it first if needed.

    ``cloud_init`` adds Debian's cloud-init package (its own cache entry): the guest then shows
    which datasource OS morphing chose for the target cloud. ``cache`` replaces the cache folder
    (``~/.cache/sterna/guests``), e.g. to prove a build from an empty one.
    """
    existing = cached_debian_guest(cloud_init, cache)
    if existing:
        return existing
    final_dir = cache_root(cache) / recipe_hash(cloud_init)
    final_dir.parent.mkdir(parents=True, exist_ok=True)
    work, owner = _start_build(final_dir.parent)
    try:
        root = work / "root"
        _run(
            ["debootstrap", "--variant=minbase", f"--include={','.join(packages(cloud_init))}", SUITE, str(root),
             MIRROR],
            log,
        )
        _customise_tree(root)
        disk = work / "disk.raw"
        _make_disk(root, disk, log)
        shutil.rmtree(root)
        _install_grub(disk, log)
        (work / "recipe.json").write_text(json.dumps(recipe(cloud_init), sort_keys=True, indent=1))
        final_dir.mkdir(exist_ok=True)
        os.replace(disk, final_dir / "disk.raw")
        os.replace(work / "recipe.json", final_dir / "recipe.json")
    finally:
        _unmount_under(work)
        shutil.rmtree(work, ignore_errors=True)
        owner.close()
    return final_dir / "disk.raw"


def _unmount_under(folder: Path) -> None:
    """Lazily unmount what debootstrap mounted inside ``folder`` (``/proc``, ``/sys``...), deepest first,
    so that deleting the folder never descends into the host's own ``/proc`` or ``/dev``."""
    prefix = f"{folder.resolve()}/"
    with open("/proc/self/mounts") as mounts:
        points = [m.split()[1].replace("\\040", " ") for m in mounts]
    for point in sorted((p for p in points if p.startswith(prefix)), key=len, reverse=True):
        subprocess.run(["umount", "-l", point], capture_output=True, check=False)


def _start_build(folder: Path) -> tuple[Path, IO[str]]:
    """A new work folder in ``folder``, and its ``.owner`` file, locked until the build ends.

    Abandoned folders are removed first. Both happen under ``folder/.builds.lock``, so no build's
    folder is ever seen between its creation and its lock.
    """
    with (folder / ".builds.lock").open("a") as builds:
        fcntl.flock(builds, fcntl.LOCK_EX)
        _remove_abandoned_builds(folder)
        work = Path(tempfile.mkdtemp(prefix="build-", dir=folder))
        owner = (work / ".owner").open("w")
        fcntl.flock(owner, fcntl.LOCK_EX)
    return work, owner


def _remove_abandoned_builds(folder: Path) -> None:
    """Delete the work folders of builds whose process died (a killed test run leaves debootstrap's
    ``/proc`` mounted in one). A live build holds the lock on its ``.owner`` file, so it is left alone."""
    for work in folder.glob("build-*"):
        try:
            owner = (work / ".owner").open("a")
        except OSError:
            continue
        with owner:
            try:
                fcntl.flock(owner, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                continue  # a build under way
            _unmount_under(work)
            shutil.rmtree(work, ignore_errors=True)


def export_stream_optimized_vmdk(raw: Path, dest: Path) -> Path:
    """Write ``raw`` as a streamOptimized VMDK, the format vSphere's ExportVm/OVF export produces."""
    subprocess.run(
        [
            "qemu-img",
            "convert",
            "-f",
            "raw",
            "-O",
            "vmdk",
            "-o",
            "subformat=streamOptimized,adapter_type=lsilogic",
            str(raw),
            str(dest),
        ],
        check=True,
    )
    return dest


def _customise_tree(root: Path) -> None:
    for path, content in FILES.items():
        target = root / path.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(content)
        target.chmod(0o755 if path in EXECUTABLES else 0o644)
    for link, dest in SYMLINKS.items():
        target = root / link.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        if target.is_symlink():
            target.unlink()
        target.symlink_to(dest)
    # No root password: the probe unit and the serial getty are all the test needs.
    _unmount_under(root)
    apt_cache = root / "var/cache/apt/archives"
    for deb in apt_cache.glob("*.deb"):
        deb.unlink()


def _make_disk(root: Path, disk: Path, log: bool) -> None:
    with open(disk, "wb") as fh:
        fh.truncate(DISK_SIZE)
    table = (
        "label: gpt\n"
        "start=2048, size=2048, type=21686148-6449-6E6F-744E-656564454649, name=bios\n"
        f"start={ROOT_START_SECTOR}, type=0FC63DAF-8483-4772-8E79-3D69E4C4779E, name=root\n"
    )
    subprocess.run(["sfdisk", "-q", str(disk)], input=table.encode(), check=True)
    root_bytes = DISK_SIZE - ROOT_START_SECTOR * 512 - 1024 * 1024  # leave the backup GPT alone
    _run(
        [
            "mkfs.ext4",
            "-q",
            "-F",
            "-L",
            "rootfs",
            "-U",
            ROOT_UUID,
            "-d",
            str(root),
            "-E",
            f"offset={ROOT_START_SECTOR * 512}",
            str(disk),
            f"{root_bytes // 1024}k",
        ],
        log,
    )


# Run inside the guest's root (guestfish ``command`` chroots into /sysroot). The disk is found from the
# mount, never named: the appliance's kernel scans its SCSI disks asynchronously, so under load its own
# root disk is sometimes /dev/sda and ours /dev/sdb. libguestfs translates names in its API calls (the
# ``mount`` below) but not inside a command string, so a hard-coded /dev/sda made GRUB target the
# appliance's bare ext2 disk ("File system `ext2' doesn't support embedding") about one build in six.
_GRUB_SCRIPT = """set -eu
root_dev=$(findmnt -no SOURCE /)
disk=/dev/$(lsblk -no PKNAME "$root_dev")
echo "installing GRUB on $disk (root filesystem on $root_dev)"
grub-install --target=i386-pc "$disk"
update-grub
"""


def _install_grub(disk: Path, log: bool) -> None:
    # grub-install needs a whole-disk block device; the libguestfs appliance has one, and update-grub run
    # there writes root=UUID=... exactly as on an installed system.
    env = dict(os.environ, LIBGUESTFS_BACKEND="direct", LIBGUESTFS_BACKEND_SETTINGS="force_tcg")
    with tempfile.NamedTemporaryFile("w", suffix=".sh") as script_file:
        script_file.write(_GRUB_SCRIPT)
        script_file.flush()
        commands = (f"run\nmount /dev/sda2 /\nupload {script_file.name} /tmp/sterna-install-grub.sh\n"
                    "command 'sh /tmp/sterna-install-grub.sh'\nrm /tmp/sterna-install-grub.sh\n")
        proc = subprocess.run(["guestfish", "-a", str(disk)], input=commands.encode(), env=env,
                              capture_output=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"installing GRUB into the test guest failed: {proc.stderr.decode()[-2000:]}")
    if log:
        print(f"[guest-builder] {proc.stdout.decode().splitlines()[0] if proc.stdout else 'GRUB installed'}")


def _run(argv: list[str], log: bool) -> None:
    proc = subprocess.run(argv, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"{argv[0]} failed ({proc.returncode}): {(proc.stdout + proc.stderr)[-3000:]}")
    if log:
        print(f"[guest-builder] {argv[0]} ok")


if __name__ == "__main__":
    print(build_debian_guest())
