"""Where an OVF package's files are: members of an ``.ova`` tar, or files next to an ``.ovf``.

Files inside an OVA are read in place (the tar stores members uncompressed and contiguous),
so nothing is unpacked to scratch.
"""

from __future__ import annotations

import tarfile
from pathlib import Path, PurePosixPath

from core.errors import InvalidInput, NotFound
from providers.vsphere.files import FileSlice


def _safe(href: str, package: Path) -> str:
    path = PurePosixPath(href)
    if path.is_absolute() or ".." in path.parts or "://" in href:
        raise InvalidInput(f"{package.name}: file reference {href!r} points outside the package")
    return str(path)


class Package:
    """An OVA (tar) or OVF (directory) package."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.is_ova = path.suffix.lower() == ".ova"
        self._members: dict[str, tarfile.TarInfo] = {}
        if self.is_ova:
            try:
                with tarfile.open(path, mode="r:") as tar:  # "r:" refuses compressed tars: no seeking in them
                    self._members = {
                        PurePosixPath(m.name).as_posix(): m for m in tar.getmembers() if m.isfile()
                    }
            except (tarfile.TarError, OSError) as exc:
                raise InvalidInput(f"{path.name} is not a readable OVA (tar) archive: {exc}") from None

    def descriptor(self) -> tuple[str, bytes]:
        """Name and bytes of the package's ``.ovf`` descriptor."""
        if not self.is_ova:
            return self.path.name, self.path.read_bytes()
        names = sorted(n for n in self._members if n.lower().endswith(".ovf"))
        if len(names) != 1:
            raise InvalidInput(f"{self.path.name}: expected one .ovf descriptor, found {len(names)}")
        return names[0], self.open(names[0]).read_at(0, self._members[names[0]].size)

    def open(self, href: str) -> FileSlice:
        """A reader over the package file ``href``."""
        name = _safe(href, self.path)
        if self.is_ova:
            member = self._members.get(name) or self._members.get(name.lstrip("./"))
            if member is None:
                raise NotFound(f"{self.path.name} has no file {href!r}")
            if member.sparse is not None:
                raise InvalidInput(f"{self.path.name}: {href!r} is stored as a GNU sparse member")
            return FileSlice(str(self.path), member.offset_data, member.size)
        file = self.path.parent / name
        if not file.is_file():
            raise NotFound(f"{self.path.name} refers to {href!r}, which is missing")
        return FileSlice(str(file), 0, file.stat().st_size)
