"""Where the Windows drivers and agent come from, and which of them a target platform needs.

The operator supplies them as virt-v2v's users do: the virtio-win ISO or its unpacked tree
(``<driver>/<os>/<arch>``, e.g. ``viostor/2k19/amd64``), cloudbase-init's MSI, and AWS's NVMe and ENA
driver packages unpacked in one directory. Nothing here runs a Windows binary: the files are copied into
the image and installed by Windows itself at first boot.
"""

from __future__ import annotations

import posixpath
from dataclasses import dataclass, field
from pathlib import Path

from osmorphing.models import OsInfo

#: where distributions install virtio-win (Fedora/RHEL's virtio-win package), as virt-v2v looks
SYSTEM_VIRTIO_WIN = (Path("/usr/share/virtio-win"), Path("/usr/share/virtio-win/virtio-win.iso"))


@dataclass(frozen=True)
class WindowsTarget:
    """What a Windows guest needs on one target platform."""

    name: str
    #: "virtio-win", "aws" or None (Windows ships the drivers: Hyper-V/Azure)
    driver_source: str | None
    #: drivers whose service must start at boot (the disk controller), by INF service name
    boot_drivers: tuple[str, ...]
    #: the other drivers staged and installed at first boot
    drivers: tuple[str, ...]
    #: cloudbase-init metadata services for this target (empty: cloudbase-init not installed)
    metadata_services: tuple[str, ...]
    cloudbase_init_required: bool
    #: RealTimeIsUniversal: the hypervisor's RTC runs in UTC
    rtc_utc: bool


_CB = "cloudbaseinit.metadata.services."
WINDOWS_TARGETS: dict[str, WindowsTarget] = {
    "kvm": WindowsTarget("kvm", "virtio-win", ("viostor", "vioscsi"), ("netkvm", "balloon", "vioserial"),
                         (_CB + "configdrive.ConfigDriveService", _CB + "nocloudservice.NoCloudConfigDriveService"),
                         False, True),
    "openstack": WindowsTarget("openstack", "virtio-win", ("viostor", "vioscsi"), ("netkvm", "balloon", "vioserial"),
                               (_CB + "httpservice.HttpService", _CB + "configdrive.ConfigDriveService"),
                               True, True),
    "aws": WindowsTarget("aws", "aws", ("awsnvme",), ("ena",), (_CB + "ec2service.EC2Service",), False, True),
    "azure": WindowsTarget("azure", None, (), (), (_CB + "azureservice.AzureService",), False, False),
    "gcp": WindowsTarget("gcp", "virtio-win", ("vioscsi",), ("netkvm",), (), False, True),
}

#: virtio-win's directory per Windows release: (major.minor, server?) -> name; 10.0 goes by build
_VIRTIO_OS = {("6.1", True): "2k8R2", ("6.1", False): "w7", ("6.2", True): "2k12", ("6.2", False): "w8",
              ("6.3", True): "2k12R2", ("6.3", False): "w8.1"}
_SERVER_BUILDS = ((26100, "2k25"), (20348, "2k22"), (17763, "2k19"), (14393, "2k16"))
_ARCH = {"x86_64": "amd64", "i386": "x86", "i686": "x86", "aarch64": "ARM64"}


def virtio_os_dirs(info: OsInfo) -> list[str]:
    """virtio-win's ``<os>`` directory names for this Windows, the best first (then older fallbacks)."""
    server = (info.windows_installation_type or "").lower().startswith("server") or "server" in (
        info.windows_product_name or "").lower()
    if info.version != "10.0":
        name = _VIRTIO_OS.get((info.version, server))
        return [name] if name else []
    build = int(info.windows_build or 0) if (info.windows_build or "").isdigit() else 0
    if not server:
        return ["w11", "w10"] if build >= 22000 else ["w10"]
    names = [name for floor, name in _SERVER_BUILDS if build >= floor]
    return names[:2] if names else []


def virtio_arch(info: OsInfo) -> str:
    return _ARCH.get(info.architecture, info.architecture)


def uses_critical_device_database(info: OsInfo) -> bool:
    """Windows before 8 / Server 2012 (6.2) bind boot devices through CriticalDeviceDatabase."""
    try:
        major, minor = (int(x) for x in [*info.version.split("."), "0"][:2])
    except ValueError:
        return False
    return (major, minor) < (6, 2)


class DriverTree:
    """Read-only view of a driver tree: a directory, or an ISO read with pycdlib (no mount, no root)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._iso = None
        if path.is_file():
            import pycdlib

            iso = pycdlib.PyCdlib()
            iso.open(str(path))
            self._iso = iso

    def close(self) -> None:
        if self._iso is not None:
            self._iso.close()

    def _iso_kwargs(self, rel: str) -> dict[str, str]:
        assert self._iso is not None
        path = "/" + rel.strip("/")
        if self._iso.has_rock_ridge():
            return {"rr_path": path}
        if self._iso.has_joliet():
            return {"joliet_path": path}
        return {"iso_path": path.upper()}

    def listdir(self, rel: str) -> list[tuple[str, bool]]:
        """``(name, is_dir)`` of the entries under ``rel`` ("" is the root); empty when absent."""
        if self._iso is None:
            base = self.path / rel
            return sorted((p.name, p.is_dir()) for p in base.iterdir()) if base.is_dir() else []
        try:
            children = list(self._iso.list_children(**self._iso_kwargs(rel)))
        except Exception:  # pycdlib raises PyCdlibInvalidInput for a missing path
            return []
        out = []
        for child in children:
            if child.is_dot() or child.is_dotdot():
                continue
            if self._iso.has_rock_ridge() and child.rock_ridge is not None:
                name = child.rock_ridge.name().decode()
            else:
                name = child.file_identifier().decode("utf-16-be" if self._iso.has_joliet() else "ascii")
                name = name.split(";")[0]
            out.append((name, child.is_dir()))
        return sorted(out)

    def read(self, rel: str) -> bytes:
        if self._iso is None:
            return (self.path / rel).read_bytes()
        import io

        buf = io.BytesIO()
        self._iso.get_file_from_iso_fp(buf, **self._iso_kwargs(rel))
        return buf.getvalue()

    def find_dir(self, *parts: str) -> str | None:
        """The real spelling of ``a/b/c`` (names compared without case), or None."""
        current = ""
        for part in parts:
            match = next((n for n, d in self.listdir(current) if d and n.lower() == part.lower()), None)
            if match is None:
                return None
            current = posixpath.join(current, match)
        return current

    def files(self, rel: str) -> list[str]:
        """Every file under ``rel``, as paths relative to ``rel``."""
        out = []
        for name, is_dir in self.listdir(rel):
            if is_dir:
                out += [posixpath.join(name, sub) for sub in self.files(posixpath.join(rel, name))]
            else:
                out.append(name)
        return out

    def find_inf(self, name: str) -> str | None:
        """Directory (relative) holding ``<name>.inf`` anywhere in the tree, case-insensitively."""
        for rel in self.files(""):
            if posixpath.basename(rel).lower() == f"{name}.inf":
                return posixpath.dirname(rel)
        return None


@dataclass
class WindowsSources:
    """The driver and agent sources found on this host, and where each was looked for."""

    virtio_win: Path | None = None
    cloudbase_init_msi: Path | None = None
    aws_drivers: Path | None = None
    looked_for: dict[str, list[str]] = field(default_factory=dict)

    @classmethod
    def locate(cls, virtio_win: Path | None, cloudbase_init_msi: Path | None, aws_drivers: Path | None,
               data_dir: Path) -> WindowsSources:
        """Configured paths win; unset ones are looked for in ``<data_dir>/windows`` and system paths."""
        base = data_dir / "windows"
        candidates = {
            "virtio_win": [virtio_win] if virtio_win else [base / "virtio-win", base / "virtio-win.iso",
                                                            *SYSTEM_VIRTIO_WIN],
            "cloudbase_init_msi": [cloudbase_init_msi] if cloudbase_init_msi else [
                base / "CloudbaseInitSetup_x64.msi", *sorted(base.glob("CloudbaseInitSetup*.msi"))],
            "aws_drivers": [aws_drivers] if aws_drivers else [base / "aws"],
        }
        found = {key: next((p for p in paths if p.exists()), None) for key, paths in candidates.items()}
        return cls(found["virtio_win"], found["cloudbase_init_msi"], found["aws_drivers"],
                   {key: [str(p) for p in paths] for key, paths in candidates.items()})

    def missing(self, target: str) -> list[str]:
        """What ``target`` needs that is absent, each naming the paths looked for."""
        spec = WINDOWS_TARGETS[target]
        problems = []
        if spec.driver_source == "virtio-win" and self.virtio_win is None:
            problems.append("virtio-win drivers (STERNA_VIRTIO_WIN) not found; looked for "
                            + ", ".join(self.looked_for.get("virtio_win", [])))
        if spec.driver_source == "aws" and self.aws_drivers is None:
            problems.append("AWS NVMe/ENA driver packages (STERNA_AWS_WINDOWS_DRIVERS) not found; looked for "
                            + ", ".join(self.looked_for.get("aws_drivers", [])))
        if spec.cloudbase_init_required and self.cloudbase_init_msi is None:
            problems.append("cloudbase-init MSI (STERNA_CLOUDBASE_INIT_MSI) not found; looked for "
                            + ", ".join(self.looked_for.get("cloudbase_init_msi", [])))
        return problems
