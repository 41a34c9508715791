"""Real disk images through libguestfs: the appliance session, and a ``Guest`` over its mounted root.

libguestfs runs a small Linux appliance under QEMU; commands given to ``command`` run chrooted in the
guest with ``/dev``, ``/proc`` and ``/sys`` bound in, so the guest's own ``update-initramfs``/``dracut``
regenerate its initramfs. Backend defaults: ``direct`` and ``force_tcg`` (KVM is not usable on every
worker host); set ``LIBGUESTFS_BACKEND`` / ``LIBGUESTFS_BACKEND_SETTINGS`` to override.
"""

from __future__ import annotations

import importlib
import os
import re
import sys
import tempfile
from types import ModuleType, TracebackType
from typing import Any

from osmorphing.errors import GuestCommandError, InspectionError, MorphingError
from osmorphing.guest import Guest

ESP_GUID = "C12A7328-F81F-11D2-BA4B-00A0C93EC93B"
BIOS_BOOT_GUID = "21686148-6449-6E6F-744E-656564454649"
_GUEST_DEVICE = re.compile(r"^/dev/(?:(?:sd|vd|xvd|hd)([a-z]+)(\d*)|nvme(\d+)n\d+(?:p(\d+))?)$")
_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
_READ_FILE_LIMIT = 2 * 1024 * 1024
MBR_SIGNATURE_OFFSET = 440


def mbr_ptuuid(signature: bytes) -> str | None:
    """An MBR's disk signature (4 bytes at offset 440) spelt as blkid's PTUUID, and so udev's
    ``ID_PART_TABLE_UUID``: 8 lower-case hex digits of the little-endian number; ``None`` when unset."""
    value = int.from_bytes(signature, "little")
    return f"{value:08x}" if value else None


def load_guestfs() -> ModuleType:
    """Import the libguestfs Python bindings (Debian's python3-guestfs), also from a non-system venv."""
    try:
        return importlib.import_module("guestfs")
    except ImportError:
        pass
    system = "/usr/lib/python3/dist-packages"
    if os.path.isfile(os.path.join(system, "guestfs.py")):
        sys.path.append(system)
        try:
            return importlib.import_module("guestfs")
        except ImportError as exc:
            raise MorphingError(
                f"libguestfs Python bindings found in {system} but not importable: {exc}"
            ) from exc
        finally:
            sys.path.remove(system)
    raise MorphingError(
        "libguestfs Python bindings are missing: install python3-guestfs "
        "(and run Sterna on the system Python 3.11 or a venv with --system-site-packages)"
    )


class ImageSession:
    """One libguestfs appliance over one disk image; use as a context manager."""

    def __init__(self, disk_path: str, fmt: str, *, readonly: bool, memsize_mb: int = 1024,
                 extra_disks: tuple[str, ...] = ()) -> None:
        self.disk_path = disk_path
        #: more disks of the same format in the same appliance (tests convert many guests in one launch)
        self.extra_disks = extra_disks
        self.fmt = fmt
        self.readonly = readonly
        self.memsize_mb = memsize_mb
        self.g: Any = None

    def __enter__(self) -> ImageSession:
        guestfs = load_guestfs()
        g = guestfs.GuestFS(python_return_dict=True)
        if "LIBGUESTFS_BACKEND" not in os.environ:
            g.set_backend("direct")
        if "LIBGUESTFS_BACKEND_SETTINGS" not in os.environ:
            g.set_backend_settings(["force_tcg"])
        g.set_memsize(self.memsize_mb)
        try:
            for path in (self.disk_path, *self.extra_disks):
                g.add_drive_opts(path, format=self.fmt, readonly=self.readonly)
            g.launch()
        except RuntimeError as exc:
            g.close()
            raise InspectionError(f"libguestfs could not open {self.disk_path} ({self.fmt}): {exc}") from exc
        self.g = g
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        g, self.g = self.g, None
        if g is None:
            return
        try:
            if exc is None:
                g.umount_all()
                g.shutdown()  # flushes writes; errors here mean the image may be incomplete
        finally:
            g.close()

    def roots(self) -> list[str]:
        roots: list[str] = self.g.inspect_os()
        if not roots:
            raise InspectionError(f"no operating system found on {self.disk_path}")
        return roots

    def hints(self, root: str) -> dict[str, Any]:
        """libguestfs inspection results for ``root``, in the keys ``detect.inspect_guest`` understands."""
        g = self.g
        mountpoints: dict[str, str] = g.inspect_get_mountpoints(root)
        hints: dict[str, Any] = {
            "type": g.inspect_get_type(root),
            "distro": g.inspect_get_distro(root),
            "arch": g.inspect_get_arch(root),
            "major_version": g.inspect_get_major_version(root),
            "minor_version": g.inspect_get_minor_version(root),
            "product_name": g.inspect_get_product_name(root),
            "product_variant": g.inspect_get_product_variant(root),
            "root": root,
            "boot": mountpoints.get("/boot"),
            "mountpoints": mountpoints,
            "firmware": self._firmware(mountpoints),
        }
        return {k: v for k, v in hints.items() if v not in (None, "unknown", "")}

    def _firmware(self, mountpoints: dict[str, str]) -> str:
        if "/boot/efi" in mountpoints or "/efi" in mountpoints:
            return "uefi"
        g = self.g
        types = set()
        for part in g.list_partitions():
            device = g.part_to_dev(part)
            if g.part_get_parttype(device) != "gpt":
                continue
            types.add(g.part_get_gpt_type(device, g.part_to_partnum(part)).upper())
        if ESP_GUID in types and BIOS_BOOT_GUID not in types:
            return "uefi"
        return "bios"

    def mount(self, root: str, *, read_only: bool = False) -> list[str]:
        """Mount the guest's filesystems at their mount points; returns problems (unmountable entries).

        ``read_only`` mounts them read-only in a writable session (a look before anything is written)."""
        problems = []
        mountpoints: dict[str, str] = self.g.inspect_get_mountpoints(root)
        mount = self.g.mount_ro if self.readonly or read_only else self.g.mount
        for mp, device in sorted(mountpoints.items(), key=lambda kv: len(kv[0])):
            try:
                mount(device, mp)
            except RuntimeError as exc:
                if mp == "/":
                    raise InspectionError(f"cannot mount the root filesystem {device}: {exc}") from exc
                problems.append(f"{mp} ({device}): {exc}")
        return problems

    def unmount(self) -> None:
        """Unmount every guest filesystem (before mounting them again another way)."""
        self.g.umount_all()

    def appliance_sh(self, script: str) -> str:
        """Run a shell script in the appliance itself (guest disks attached, not necessarily mounted)."""
        try:
            return str(self.g.debug("sh", [script]))
        except RuntimeError as exc:
            raise GuestCommandError("appliance script", str(exc)) from exc


class LibguestfsGuest(Guest):
    """A ``Guest`` over the filesystems an ``ImageSession`` mounted."""

    executes_commands = True

    def __init__(self, session: ImageSession) -> None:
        self.session = session
        self.g = session.g
        self._ntfs_mounts: set[str] | None = None
        self._all_mounts: set[str] = set()

    def case_sensitive_path(self, path: str) -> str | None:
        """The real spelling of ``path`` (libguestfs resolves case on NTFS), or None when absent."""
        try:
            real = str(self.g.case_sensitive_path(path))
        except RuntimeError:
            return None
        return real if self.g.exists(real) else None

    def read_bytes(self, path: str) -> bytes:
        if self.g.filesize(path) <= _READ_FILE_LIMIT:
            return bytes(self.g.read_file(path))
        with tempfile.NamedTemporaryFile(prefix="sterna-guest-") as tmp:
            self.g.download(path, tmp.name)
            return tmp.read()

    def write_bytes(self, path: str, data: bytes, mode: int = 0o644) -> None:
        if len(data) <= _READ_FILE_LIMIT:
            self.g.write(path, data)
        else:  # past libguestfs' message size (registry hives, MSIs): through a file
            with tempfile.NamedTemporaryFile(prefix="sterna-guest-") as tmp:
                tmp.write(data)
                tmp.flush()
                self.g.upload(tmp.name, path)
        if not self._ntfs(path):  # ntfs-3g has no POSIX modes to set
            self.g.chmod(mode, path)

    def _ntfs(self, path: str) -> bool:
        if self._ntfs_mounts is None:  # the mounts do not change while a guest is being morphed
            mounts: dict[str, str] = self.g.mountpoints()
            self._ntfs_mounts = {mp for dev, mp in mounts.items() if self.g.vfs_type(dev) == "ntfs"}
            self._all_mounts = set(mounts.values())
        best = max((mp for mp in self._all_mounts if path.startswith(mp.rstrip("/") + "/") or mp == "/"),
                   key=len, default="/")
        return best in self._ntfs_mounts

    def exists(self, path: str) -> bool:
        return bool(self.g.exists(path) or self.g.is_symlink(path))

    def is_file(self, path: str) -> bool:
        return bool(self.g.is_file(path, followsymlinks=True))

    def is_dir(self, path: str) -> bool:
        return bool(self.g.is_dir(path, followsymlinks=True))

    def is_symlink(self, path: str) -> bool:
        return bool(self.g.is_symlink(path))

    def readlink(self, path: str) -> str:
        return str(self.g.readlink(path))

    def listdir(self, path: str) -> list[str]:
        return sorted(self.g.ls(path)) if self.is_dir(path) else []

    def remove(self, path: str) -> None:
        if self.g.is_dir(path) and not self.g.is_symlink(path):
            self.g.rm_rf(path)
        else:
            self.g.rm_f(path)

    def rename(self, src: str, dst: str) -> None:
        self.g.mkdir_p(os.path.dirname(dst))
        self.g.mv(src, dst)

    def symlink(self, target: str, link: str) -> None:
        self.g.ln_s(target, link)

    def mkdir_p(self, path: str) -> None:
        self.g.mkdir_p(path)

    def run(self, argv: list[str]) -> str:
        # Through sh so the guest's PATH applies and stderr lands in the output we report.
        wrapped = ["/bin/sh", "-c", f'PATH={_PATH}; export PATH; exec "$@" 2>&1', "sh", *argv]
        try:
            return str(self.g.command(wrapped))
        except RuntimeError as exc:
            raise GuestCommandError(argv, str(exc)) from exc

    def run_script(self, script: str) -> str:
        path = "/tmp/sterna-user-script"
        self.g.mkdir_p("/tmp")
        self.write_bytes(path, script.encode(), 0o755)
        try:
            return self.run([path] if script.startswith("#!") else ["/bin/sh", path])
        finally:
            self.g.rm_f(path)

    def run_appliance_script(self, script: str) -> str:
        return self.session.appliance_sh(script)

    def boot_disk_ptuuid(self) -> str | None:
        mounted = {mp: dev for dev, mp in self.g.mountpoints().items()}
        device = mounted.get("/boot") or mounted.get("/")
        if device is None:
            return None
        try:
            disk = str(self.g.part_to_dev(device))  # fails for LVM and RAID: no single disk to name
            table = str(self.g.part_get_parttype(disk))
            if table == "gpt":
                return str(self.g.part_get_disk_guid(disk)).lower() or None
            if table == "msdos":
                return mbr_ptuuid(bytes(self.g.pread_device(disk, 4, MBR_SIGNATURE_OFFSET)))
        except RuntimeError:
            return None
        return None

    def device_uuid(self, device: str) -> str | None:
        """UUID of the filesystem the guest calls ``device``: its n-th disk's m-th partition here."""
        m = _GUEST_DEVICE.match(device)
        if not m:
            return None
        if m.group(1):
            index = 0
            for ch in m.group(1):
                index = index * 26 + (ord(ch) - ord("a") + 1)
            index -= 1
            partnum = m.group(2)
        else:
            index, partnum = int(m.group(3)), m.group(4) or ""
        disks = self.g.list_devices()
        if index >= len(disks):
            return None
        target = disks[index]
        if partnum:
            target = next(
                (
                    p
                    for p in self.g.list_partitions()
                    if self.g.part_to_dev(p) == disks[index] and self.g.part_to_partnum(p) == int(partnum)
                ),
                None,
            )
            if target is None:
                return None
        try:
            uuid = str(self.g.vfs_uuid(target))
        except RuntimeError:
            return None
        return uuid or None
