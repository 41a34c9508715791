"""Driver sources without an appliance: INF parsing, the virtio-win ISO, version -> directory choice,
and what is refused when a target's sources are missing (a Windows tree in a host directory)."""

from __future__ import annotations

import io
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pycdlib
import pytest

from osmorphing import DirectoryGuest
from osmorphing.errors import UnsupportedOS
from osmorphing.image import morph_windows
from osmorphing.models import MorphOptions, OsInfo
from osmorphing.wininf import decode_inf, parse_inf
from osmorphing.winsources import DriverTree, WindowsSources, uses_critical_device_database, virtio_os_dirs
from tests.guests.windows import system_keys
from tests.guests.winhive import make_hive


def _info(version: str, build: str, kind: str, product: str) -> OsInfo:
    return OsInfo(os_type="windows", version=version, windows_build=build, windows_installation_type=kind,
                  windows_product_name=product, architecture="x86_64")


@pytest.mark.parametrize(("info", "dirs"), [
    (_info("6.1", "7601", "Server", "Windows Server 2008 R2 Standard"), ["2k8R2"]),
    (_info("6.3", "9600", "Server", "Windows Server 2012 R2 Datacenter"), ["2k12R2"]),
    (_info("6.3", "9600", "Client", "Windows 8.1 Pro"), ["w8.1"]),
    (_info("10.0", "14393", "Server", "Windows Server 2016 Datacenter"), ["2k16"]),
    (_info("10.0", "17763", "Server", "Windows Server 2019 Standard"), ["2k19", "2k16"]),
    (_info("10.0", "20348", "Server", "Windows Server 2022 Standard"), ["2k22", "2k19"]),
    (_info("10.0", "19045", "Client", "Windows 10 Enterprise"), ["w10"]),
    (_info("10.0", "22631", "Client", "Windows 10 Pro"), ["w11", "w10"]),
])
def test_virtio_win_directory_follows_version_and_build(info: OsInfo, dirs: list[str]) -> None:
    assert virtio_os_dirs(info) == dirs


def test_critical_device_database_before_windows_8_only() -> None:
    assert uses_critical_device_database(_info("6.1", "7601", "Server", "x"))
    assert not uses_critical_device_database(_info("6.2", "9200", "Server", "x"))
    assert not uses_critical_device_database(_info("10.0", "17763", "Server", "x"))


def test_inf_gives_service_group_start_type_and_device_ids(windows_sources: Any) -> None:
    inf = parse_inf(decode_inf((windows_sources.virtio_win / "viostor/2k19/amd64/viostor.inf").read_bytes()))
    assert inf.class_guid == "{4D36E97B-E325-11CE-BFC1-08002BE10318}"
    assert inf.hardware_ids == ["PCI\\VEN_1AF4&DEV_1001&SUBSYS_00011AF4&REV_00",
                                "PCI\\VEN_1AF4&DEV_1042&SUBSYS_00011AF4&REV_00"]
    [svc] = inf.services
    assert (svc.name, svc.binary, svc.service_type, svc.start_type, svc.load_order_group) == (
        "viostor", "viostor.sys", 1, 0, "SCSI miniport")


def test_inf_in_utf16_with_continuations() -> None:
    text = ("[Version]\r\nClassGuid={4d36e972-e325-11ce-bfc1-08002be10318}\r\n[Manufacturer]\r\n"
            "%M% = Models, NTamd64\r\n[Models.NTamd64]\r\n%D% = Inst, \\\r\n  PCI\\VEN_1D0F&DEV_EC20 ; ENA\r\n"
            "[Inst.Services]\r\nAddService = ena, 2, Svc\r\n[Svc]\r\nServiceBinary = %12%\\ena.sys\r\n"
            "StartType = 3\r\nLoadOrderGroup = NDIS\r\n")
    inf = parse_inf(decode_inf(b"\xff\xfe" + text.encode("utf-16-le")))
    assert inf.hardware_ids == ["PCI\\VEN_1D0F&DEV_EC20"]
    assert inf.services[0].start_type == 3 and inf.services[0].load_order_group == "NDIS"


def test_virtio_win_iso_reads_like_the_tree(windows_sources: Any, tmp_path: Path) -> None:
    """The ISO is read in place with pycdlib (no mount, no root), with virtio-win's Joliet/Rock Ridge names."""
    tree_root = windows_sources.virtio_win
    iso = pycdlib.PyCdlib()
    iso.new(interchange_level=3, joliet=3, rock_ridge="1.09", vol_ident="VIRTIO_WIN")
    short: dict[Path, str] = {tree_root: ""}
    for i, path in enumerate(sorted(tree_root.rglob("*"))):
        rel = "/" + str(path.relative_to(tree_root))
        # ISO 9660 names are short and upper case; Joliet and Rock Ridge carry the real ones, as on virtio-win.
        short[path] = f"{short[path.parent]}/{'D' if path.is_dir() else 'F'}{i}"
        if path.is_dir():
            iso.add_directory(short[path], rr_name=path.name, joliet_path=rel)
        else:
            data = path.read_bytes()
            iso.add_fp(io.BytesIO(data), len(data), short[path] + ".;1", rr_name=path.name, joliet_path=rel)
    iso.write(str(tmp_path / "virtio-win.iso"))
    iso.close()
    from_iso, from_dir = DriverTree(tmp_path / "virtio-win.iso"), DriverTree(tree_root)
    try:
        found = from_iso.find_dir("vioscsi", "2k22", "amd64")
        assert found == from_dir.find_dir("vioscsi", "2k22", "amd64") == "vioscsi/2k22/amd64"
        rel = "vioscsi/2k22/amd64"
        assert from_iso.files(rel) == from_dir.files(rel) == ["vioscsi.cat", "vioscsi.inf", "vioscsi.sys"]
        assert from_iso.read(f"{rel}/vioscsi.sys") == (tree_root / rel / "vioscsi.sys").read_bytes()
        assert from_iso.find_dir("viostor", "2k25", "amd64") is None
    finally:
        from_iso.close()


def test_a_configured_source_that_does_not_exist_stops_the_service_at_start(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from pydantic import ValidationError

    from core.settings import Settings

    monkeypatch.setenv("VIRTIO_WIN", str(tmp_path / "nowhere.iso"))  # virt-v2v's name is accepted too
    with pytest.raises(ValidationError, match=r"STERNA_VIRTIO_WIN: .*nowhere\.iso does not exist"):
        Settings()
    monkeypatch.setenv("VIRTIO_WIN", str(tmp_path))
    monkeypatch.setenv("STERNA_CLOUDBASE_INIT_MSI", str(tmp_path / "missing.msi"))
    with pytest.raises(ValidationError, match=r"missing\.msi does not exist"):
        Settings()
    monkeypatch.delenv("STERNA_CLOUDBASE_INIT_MSI")
    assert Settings().virtio_win == tmp_path


def test_a_target_whose_drivers_are_missing_names_the_paths_looked_for(tmp_path: Path) -> None:
    sources = WindowsSources.locate(None, None, None, tmp_path)  # nothing configured, nothing in data_dir
    assert sources.missing("azure") == []  # Windows ships Hyper-V's drivers
    [kvm] = sources.missing("kvm")
    assert str(tmp_path / "windows" / "virtio-win") in kvm and "/usr/share/virtio-win" in kvm
    openstack = sources.missing("openstack")
    assert any(str(tmp_path / "windows" / "CloudbaseInitSetup_x64.msi") in p for p in openstack)
    [aws] = sources.missing("aws")
    assert str(tmp_path / "windows" / "aws") in aws


def test_a_tree_without_this_versions_directory_is_refused_before_anything_is_written(
        make_guest: Callable[[str], DirectoryGuest], windows_sources: Any, tmp_path: Path) -> None:
    guest = make_guest("windows2022")
    make_hive(guest.root / "Windows/System32/config/SYSTEM", system_keys())
    before = {p: p.read_bytes() for p in guest.root.rglob("*") if p.is_file()}
    partial = tmp_path / "virtio-win"
    shutil.copytree(windows_sources.virtio_win / "viostor" / "2k16", partial / "viostor" / "2k16")
    events: list[str] = []
    # (2022 may fall back to 2k19, not to 2k16.)
    with pytest.raises(UnsupportedOS, match=r"no viostor .* looked for .*viostor/2k22/amd64 and .*viostor/2k19/amd64"):
        morph_windows(guest, {}, "kvm", None, MorphOptions(), WindowsSources(partial, None, None), events.append)
    assert {p: p.read_bytes() for p in guest.root.rglob("*") if p.is_file()} == before
    assert not any(e.startswith(("created ", "modified ", "deleted ")) for e in events), events
