"""The guest filesystem that inspection and morphing work on.

``Guest`` is the abstract contract: file operations with guest-absolute paths, plus commands that run
*inside* the guest. ``DirectoryGuest`` implements it on a plain directory tree (tests, synthetic guests):
its file operations are real, and its commands are recorded but not run. ``osmorphing.libguestfs_guest``
implements it on a real disk image.
"""

from __future__ import annotations

import os
import posixpath
import shutil
from abc import ABC, abstractmethod
from pathlib import Path


class Guest(ABC):
    """A mounted guest operating system. Paths are absolute guest paths (``/etc/fstab``)."""

    #: True when ``run`` really executes commands in the guest
    executes_commands: bool = False

    @abstractmethod
    def read_bytes(self, path: str) -> bytes: ...

    def read_text(self, path: str) -> str:
        return self.read_bytes(path).decode("utf-8", errors="replace")

    @abstractmethod
    def write_bytes(self, path: str, data: bytes, mode: int = 0o644) -> None: ...

    def write_text(self, path: str, text: str, mode: int = 0o644) -> None:
        self.write_bytes(path, text.encode(), mode)

    @abstractmethod
    def exists(self, path: str) -> bool:
        """True if ``path`` exists (symlinks followed; a dangling link counts as existing)."""

    @abstractmethod
    def is_file(self, path: str) -> bool: ...

    @abstractmethod
    def is_dir(self, path: str) -> bool: ...

    @abstractmethod
    def is_symlink(self, path: str) -> bool: ...

    @abstractmethod
    def readlink(self, path: str) -> str: ...

    @abstractmethod
    def listdir(self, path: str) -> list[str]:
        """Sorted entry names of a directory; empty when it does not exist."""

    @abstractmethod
    def remove(self, path: str) -> None: ...

    @abstractmethod
    def rename(self, src: str, dst: str) -> None: ...

    @abstractmethod
    def symlink(self, target: str, link: str) -> None: ...

    @abstractmethod
    def mkdir_p(self, path: str) -> None: ...

    @abstractmethod
    def run(self, argv: list[str]) -> str:
        """Run a command chrooted in the guest and return its output; raise ``GuestCommandError``."""

    @abstractmethod
    def run_script(self, script: str) -> str:
        """Run a script (a shell script, or any ``#!`` interpreter the guest has) chrooted in the guest."""

    @abstractmethod
    def run_appliance_script(self, script: str) -> str:
        """Run a shell script *outside* the guest, with its disks attached but not mounted."""

    @abstractmethod
    def device_uuid(self, device: str) -> str | None:
        """Filesystem UUID of a guest device name as the guest's fstab spells it (``/dev/sda2``)."""

    def boot_disk_ptuuid(self) -> str | None:
        """The partition-table UUID (blkid's PTUUID: the GPT disk GUID, or the MBR disk signature as 8 hex
        digits) of the disk holding ``/boot`` (``/`` when it is not separate): the disk whose boot code a
        BIOS GRUB install writes. ``None`` when it cannot be told (LVM, RAID, no partition table)."""
        return None

    def glob(self, directory: str, suffix: str = "", prefix: str = "") -> list[str]:
        """Full paths of entries in ``directory`` whose names start/end as given."""
        return [
            posixpath.join(directory, name)
            for name in self.listdir(directory)
            if name.endswith(suffix) and name.startswith(prefix)
        ]


def find_case_insensitive(guest: Guest, path: str) -> str | None:
    """The real spelling of ``path`` on a case-insensitive (NTFS) guest, or ``None``."""
    fast = getattr(guest, "case_sensitive_path", None)
    if fast is not None:  # one libguestfs call instead of one listing per component
        return fast(path)  # type: ignore[no-any-return]
    current = "/"
    for part in [p for p in path.split("/") if p]:
        match = next((n for n in guest.listdir(current) if n.lower() == part.lower()), None)
        if match is None:
            return None
        current = posixpath.join(current, match)
    return current


class DirectoryGuest(Guest):
    """A guest whose root filesystem is a host directory.

    Symlinks are resolved inside ``root`` (an absolute link target means the guest's root), so a tree
    copied from a real system reads as it would when booted. Commands are recorded in ``commands`` and
    return ``""``. ``devices`` maps guest device names to filesystem UUIDs for ``device_uuid``;
    ``boot_ptuuid`` is what ``boot_disk_ptuuid`` answers.
    """

    executes_commands = False

    def __init__(self, root: Path | str, devices: dict[str, str] | None = None,
                 boot_ptuuid: str | None = None) -> None:
        self.root = Path(root)
        self.devices = dict(devices or {})
        self.boot_ptuuid = boot_ptuuid
        self.commands: list[list[str]] = []
        self.scripts: list[str] = []
        self.appliance_scripts: list[str] = []

    # -- path handling -------------------------------------------------------------------------
    def _host(self, path: str, follow_last: bool = True) -> Path:
        """Host path of a guest path, resolving symlinks as the guest would see them."""
        if not path.startswith("/"):
            raise ValueError(f"guest paths are absolute: {path!r}")
        parts = [p for p in path.split("/") if p]
        resolved: list[str] = []
        hops = 0
        while parts:
            name = parts.pop(0)
            if name == ".":
                continue
            if name == "..":
                if resolved:
                    resolved.pop()
                continue
            candidate = self.root.joinpath(*resolved, name)
            if candidate.is_symlink() and (parts or follow_last):
                hops += 1
                if hops > 40:
                    raise OSError(f"too many symlinks resolving {path}")
                target = os.readlink(candidate)
                if target.startswith("/"):
                    resolved = []
                parts = [p for p in target.split("/") if p] + parts
                continue
            resolved.append(name)
        return self.root.joinpath(*resolved)

    # -- file operations -----------------------------------------------------------------------
    def read_bytes(self, path: str) -> bytes:
        return self._host(path).read_bytes()

    def write_bytes(self, path: str, data: bytes, mode: int = 0o644) -> None:
        host = self._host(path)
        host.parent.mkdir(parents=True, exist_ok=True)
        host.write_bytes(data)
        host.chmod(mode)

    def exists(self, path: str) -> bool:
        return self._host(path, follow_last=False).is_symlink() or self._host(path).exists()

    def is_file(self, path: str) -> bool:
        return self._host(path).is_file()

    def is_dir(self, path: str) -> bool:
        return self._host(path).is_dir()

    def is_symlink(self, path: str) -> bool:
        return self._host(path, follow_last=False).is_symlink()

    def readlink(self, path: str) -> str:
        return os.readlink(self._host(path, follow_last=False))

    def listdir(self, path: str) -> list[str]:
        host = self._host(path)
        return sorted(os.listdir(host)) if host.is_dir() else []

    def remove(self, path: str) -> None:
        host = self._host(path, follow_last=False)
        if host.is_dir() and not host.is_symlink():
            shutil.rmtree(host)
        else:
            host.unlink()

    def rename(self, src: str, dst: str) -> None:
        target = self._host(dst, follow_last=False)
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(self._host(src, follow_last=False), target)

    def symlink(self, target: str, link: str) -> None:
        host = self._host(link, follow_last=False)
        host.parent.mkdir(parents=True, exist_ok=True)
        host.symlink_to(target)

    def mkdir_p(self, path: str) -> None:
        self._host(path).mkdir(parents=True, exist_ok=True)

    # -- commands ------------------------------------------------------------------------------
    def run(self, argv: list[str]) -> str:
        self.commands.append(list(argv))
        return ""

    def run_script(self, script: str) -> str:
        self.scripts.append(script)
        return ""

    def run_appliance_script(self, script: str) -> str:
        self.appliance_scripts.append(script)
        return ""

    def device_uuid(self, device: str) -> str | None:
        return self.devices.get(device)

    def boot_disk_ptuuid(self) -> str | None:
        return self.boot_ptuuid
