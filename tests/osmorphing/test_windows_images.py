"""Windows conversion on synthetic NTFS disks, read back with libguestfs and hivex.

Seven Windows versions for kvm (``TARGETS``; openstack and aws go through the REST API in
``test_windows_migration``, with the same checks): each target's seven disks converted in one libguestfs
appliance (as ``morph_image`` does one), then opened read-only in another and checked
(``windows_checks``): the driver files of that
version's virtio-win directory (or AWS's packages), the boot-start service keys, the
CriticalDeviceDatabase entries only where Windows still uses them (before 6.2), the Group Policy startup
script (file, ``scripts.ini``, registry) and the cloudbase-init configuration for the target.
What this cannot show is that Windows boots; that needs a real Windows image (README, Windows).
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from osmorphing.errors import UnsupportedOS
from osmorphing.image import morph_windows
from osmorphing.libguestfs_guest import ImageSession, LibguestfsGuest
from osmorphing.models import MorphOptions, MorphReport
from osmorphing.winsources import WindowsSources
from tests.guests.windows import read_back
from tests.osmorphing import windows_checks as checks
from tests.osmorphing.conftest import VERSIONS
from tests.osmorphing.windows_checks import USER_SCRIPTS

#: Each target converts every version in an appliance of its own (2-5 min of TCG libguestfs). openstack and
#: aws pass here too (all 70 of their rows, run once), but their every version goes through the REST API in
#: test_windows_migration, with these same checks on the disk the destination received: their rows here
#: would spend ~5 min more of the suite checking the same conversion again.
TARGETS = ("kvm",)
OPTIONS = MorphOptions(keep_static_ip=True, instance_name="win-vm", user_scripts=USER_SCRIPTS)


def _sources(s: Any) -> WindowsSources:
    return WindowsSources(s.virtio_win, s.cloudbase_init_msi, s.aws_drivers)


def _convert_for(target: str, images: dict[str, Path], sources: Any, work: Path) -> dict[tuple[str, str], Any]:
    """Every version converted for ``target`` in one appliance, then read back read-only in another."""
    disks = {version: _overlay(images[version], work / f"{version}-{target}.qcow2") for version in VERSIONS}
    reports: dict[str, MorphReport] = {}
    events: dict[str, list[str]] = {v: [] for v in VERSIONS}
    with ImageSession(str(disks[VERSIONS[0]]), "qcow2", readonly=False,
                      extra_disks=tuple(str(disks[v]) for v in VERSIONS[1:])) as session:
        roots = {session.g.part_to_dev(r): r for r in session.roots()}
        for device, version in zip(session.g.list_devices(), VERSIONS, strict=True):
            root = roots[device]
            session.mount(root)
            reports[version] = morph_windows(LibguestfsGuest(session), session.hints(root), target, "vmware",
                                             OPTIONS, _sources(sources), events[version].append)
            session.g.umount_all()
    back = read_back(disks, work, "qcow2")
    return {(v, target): (reports[v], events[v], back[v]) for v in VERSIONS}


@pytest.fixture(scope="module")
def converted(windows_base_images: dict[str, Path], windows_sources: Any,
              tmp_path_factory: pytest.TempPathFactory) -> Any:
    """``converted[(version, target)]``: (report, events, read-back); each target converted on first use."""
    cache: dict[tuple[str, str], Any] = {}

    class Lazy:
        def __getitem__(self, key: tuple[str, str]) -> Any:
            if key not in cache:
                work = tmp_path_factory.mktemp(f"windows-{key[1]}")
                cache.update(_convert_for(key[1], windows_base_images, windows_sources, work))
            return cache[key]

    return Lazy()


# Target-major order: each target's appliance work happens once, when its first test runs.
MATRIX = [(v, t) for t in TARGETS for v in VERSIONS]


@pytest.mark.parametrize(("version", "target"), MATRIX)
def test_drivers_of_that_version_are_staged_and_the_disk_driver_starts_at_boot(
        converted: dict[tuple[str, str], Any], version: str, target: str) -> None:
    checks.drivers_of_that_version_are_staged_and_the_disk_driver_starts_at_boot(
        converted[(version, target)][2], version, target)


@pytest.mark.parametrize(("version", "target"), MATRIX)
def test_critical_device_database_only_where_windows_uses_it(
        converted: dict[tuple[str, str], Any], version: str, target: str) -> None:
    checks.critical_device_database_only_where_windows_uses_it(converted[(version, target)][2], version, target)


@pytest.mark.parametrize(("version", "target"), MATRIX)
def test_startup_script_is_registered_and_does_the_first_boot_work(
        converted: dict[tuple[str, str], Any], version: str, target: str) -> None:
    checks.startup_script_is_registered_and_does_the_first_boot_work(
        converted[(version, target)][2], version, target)


@pytest.mark.parametrize(("version", "target"), MATRIX)
def test_cloudbase_init_is_staged_with_the_targets_metadata_service(
        converted: dict[tuple[str, str], Any], windows_sources: Any, version: str, target: str) -> None:
    checks.cloudbase_init_is_staged_with_the_targets_metadata_service(
        converted[(version, target)][2], version, target, windows_sources.cloudbase_init_msi.read_bytes())


@pytest.mark.parametrize(("version", "target"), MATRIX)
def test_clock_san_policy_vmware_services_and_page_file(
        converted: dict[tuple[str, str], Any], version: str, target: str) -> None:
    report, events, rb = converted[(version, target)]
    checks.clock_san_policy_vmware_services_and_page_file(rb, version, target)
    # Every change is a task event: each registry key and file the report lists was announced.
    assert report.changes
    for change in report.changes:
        assert change.line() in events


def test_a_target_whose_drivers_are_missing_fails_naming_the_paths(
        windows_base_images: dict[str, Path], windows_sources: Any, tmp_path: Path) -> None:
    sources = WindowsSources.locate(None, None, None, tmp_path)  # nothing configured, nothing in data_dir
    assert sources.missing("azure") == []  # Windows ships Hyper-V's drivers
    [kvm] = sources.missing("kvm")
    assert str(tmp_path / "windows" / "virtio-win") in kvm and "/usr/share/virtio-win" in kvm
    openstack = sources.missing("openstack")
    assert any(str(tmp_path / "windows" / "CloudbaseInitSetup_x64.msi") in p for p in openstack)
    [aws] = sources.missing("aws")
    assert str(tmp_path / "windows" / "aws") in aws
    # A tree without this version's directory: refused before anything is written, naming what was looked for.
    partial = tmp_path / "virtio-win"
    # (2022 may fall back to 2k19, not to 2k16.)
    shutil.copytree(windows_sources.virtio_win / "viostor" / "2k16", partial / "viostor" / "2k16")
    with pytest.raises(UnsupportedOS, match=r"no viostor .* looked for .*viostor/2k22/amd64 and .*viostor/2k19/amd64"):
        _convert_one(windows_base_images["windows2022"], tmp_path, WindowsSources(partial, None, None))


def _overlay(base: Path, path: Path) -> Path:
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-b", str(base), "-F", "raw", str(path)],
                   check=True)
    return path


def _convert_one(base: Path, tmp: Path, sources: WindowsSources) -> MorphReport:
    disk = _overlay(base, tmp / "one.qcow2")
    with ImageSession(str(disk), "qcow2", readonly=False) as session:
        root = session.roots()[0]
        session.mount(root)
        return morph_windows(LibguestfsGuest(session), session.hints(root), "kvm", None, MorphOptions(),
                             sources, lambda _l: None)
