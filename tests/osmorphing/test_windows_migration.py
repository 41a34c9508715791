"""A Windows guest migrated local -> local through the REST API, with OS morphing for KVM.

First without any virtio-win on the worker host: the migration fails at validation, and the error
names the paths looked for. Then with the operator's sources in ``<data dir>/windows`` (the default
places): the migration completes, every change is an OS_MORPHING event, and the destination disk,
read back with libguestfs and hivex, holds Server 2019's virtio drivers, the boot-start viostor
service, the startup script and cloudbase-init's configuration. No boot: that needs real Windows.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import RunningStack, task, wait_final
from tests.guests.windows import read_back, sys_bytes

pytestmark = [pytest.mark.slow]


def _windows_vm(inventory: Path, disk: Path) -> None:
    vm_dir = inventory / "win-vm"
    vm_dir.mkdir(parents=True)
    shutil.copyfile(disk, vm_dir / "disk-0.raw")
    vm = {"name": "win-vm", "num_cpu": 2, "memory_mb": 4096, "firmware": "BIOS", "os_type": "windows",
          "guest_id": "windows2019srv_64Guest", "nics": [{"network_name": "VM Network"}],
          "disks": [{"id": "disk-0", "file": "disk-0.raw", "format": "raw"}]}
    (vm_dir / "vm.json").write_text(json.dumps(vm))


def _events(migration: dict[str, Any], task_type: str) -> list[str]:
    return [e["message"] for e in task(migration, "win-vm", task_type)["events"]]


@pytest.mark.parametrize("stack", ["sqlite"], indirect=True)
def test_windows_migration_validates_sources_then_injects_drivers(
        stack: RunningStack, windows_base_images: dict[str, Path], windows_sources: Any, tmp_path: Path) -> None:
    src, dst = stack.inventory("win-source"), stack.inventory("win-kvm")
    _windows_vm(src, windows_base_images["windows2019"])
    windows_dir = stack.root / "windows"
    assert not windows_dir.exists()
    with stack.client() as api:
        a = api.create_endpoint("win-source", "local", {"path": str(src)})
        b = api.create_endpoint("win-kvm", "local", {"path": str(dst)})
        fields: dict[str, Any] = dict(
            origin_endpoint_id=a["id"], destination_endpoint_id=b["id"], instances=["win-vm"],
            skip_os_morphing=False, network_map={"VM Network": "default"},
            destination_environment={"verify_boot": False})
        refused = wait_final(api, api.create_migration(**fields)["id"], timeout=300)
        assert refused["last_execution_status"] == "ERROR"
        validate = task(refused, "win-vm", "VALIDATE_MIGRATION_INPUTS")
        assert validate["status"] == "ERROR"
        assert f"looked for {windows_dir / 'virtio-win'}" in validate["exception_details"], validate
        assert task(refused, "win-vm", "REPLICATE_DISKS")["status"] != "COMPLETED"

        # The operator drops the sources where Sterna looks by default.
        shutil.copytree(windows_sources.virtio_win, windows_dir / "virtio-win")
        shutil.copyfile(windows_sources.cloudbase_init_msi, windows_dir / "CloudbaseInitSetup_x64.msi")
        done = wait_final(api, api.create_migration(**fields)["id"], timeout=900)

    assert done["last_execution_status"] == "COMPLETED", [t["exception_details"] for t in done["tasks"]]
    events = _events(done, "OS_MORPHING")
    assert any("detected Windows Server 2019 Standard" in e for e in events), events
    for needle in ("HKLM\\SYSTEM\\ControlSet001\\Services\\viostor: Type=1", "Start=0",
                   "/Windows/Drivers/Sterna/viostor: driver package viostor", "firstboot.ps1",
                   "HKLM\\SOFTWARE\\Microsoft\\Windows\\CurrentVersion\\Group Policy\\Scripts\\Startup\\0\\0",
                   "SanPolicy=1", "RealTimeIsUniversal=1"):
        assert any(needle in e for e in events), (needle, events)

    out = json.loads((dst / "win-vm" / "vm.json").read_text())
    disk = dst / "win-vm" / out["disks"][0]["file"]
    rb = read_back({"win": disk}, tmp_path, out["disks"][0]["format"])["win"]
    assert rb.file("/Windows/System32/drivers/viostor.sys") == sys_bytes("viostor", "2k19", "amd64")
    service = rb.values("SYSTEM", "ControlSet001\\Services\\viostor")
    assert service is not None and service["Start"] == (4, 0)  # REG_DWORD 0: boot start
    assert "0CmdLine=C:\\Windows\\Sterna\\firstboot.cmd" in (
        rb.file("/Windows/System32/GroupPolicy/Machine/Scripts/scripts.ini") or b"")[2:].decode("utf-16-le")
    conf = (rb.file("/Windows/Sterna/cloudbase-init.conf") or b"").decode()
    assert "metadata_services=cloudbaseinit.metadata.services.configdrive.ConfigDriveService" in conf
