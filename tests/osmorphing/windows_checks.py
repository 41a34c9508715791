"""What a Windows disk converted for a target must hold, read back with libguestfs and hivex.

One set of checks for every target, run by ``test_windows_migration`` on the disks each destination
received through the REST API (the local inventory's file, the Glance image, the EBS snapshot).
Each check takes the read-back disk, the Windows version and the conversion target, and raises
AssertionError.
The conversions are made with ``keep_static_ip``, and ``FIRST_BOOT_SCRIPT`` as a global Windows
``replica_first_boot`` user script.
"""

from __future__ import annotations

from typing import Any

from osmorphing.winreg import REG_DWORD, REG_EXPAND_SZ, REG_MULTI_SZ, REG_QWORD, REG_SZ
from tests.guests.windows import STATIC_IP, Readback, sys_bytes

# Windows version -> the virtio-win directory an operator's tree has for it (virtio-win's own names)
VIRTIO_DIR = {"windows2008r2": "2k8R2", "windows2012r2": "2k12R2", "windows2016": "2k16",
              "windows2019": "2k19", "windows2022": "2k22", "windows10": "w10", "windows11": "w11"}
CS = "ControlSet001"
SCRIPTS = "Microsoft\\Windows\\CurrentVersion\\Group Policy\\Scripts\\Startup\\0"
FIRST_BOOT_SCRIPT = "Write-Output 'hello from the first boot'"
#: the ``user_scripts`` the conversions get (Coriolis's format)
USER_SCRIPTS: dict[str, Any] = {
    "global": {"windows": [{"phase": "replica_first_boot", "payload": FIRST_BOOT_SCRIPT}]}}
#: the guest images that already had a local Group Policy startup script (ours goes next to it)
EXISTING_GPO = ("windows2016",)
METADATA = {"kvm": "cloudbaseinit.metadata.services.configdrive.ConfigDriveService,"
                   "cloudbaseinit.metadata.services.nocloudservice.NoCloudConfigDriveService",
            "openstack": "cloudbaseinit.metadata.services.httpservice.HttpService,"
                         "cloudbaseinit.metadata.services.configdrive.ConfigDriveService",
            "aws": "cloudbaseinit.metadata.services.ec2service.EC2Service"}


def _packages(target: str) -> tuple[str, ...]:
    return ("awsnvme", "ena") if target == "aws" else ("viostor", "vioscsi", "netkvm", "balloon", "vioserial")


def drivers_of_that_version_are_staged_and_the_disk_driver_starts_at_boot(
        rb: Readback, version: str, target: str) -> None:
    if target == "aws":
        staged = {"awsnvme": "AWSNVMe", "ena": "ena"}
        boot = {"AWSNVMe": ("awsnvme", "AWSNVMe.sys", sys_bytes("AWSNVMe", "aws", "amd64"))}
    else:
        os_dir = VIRTIO_DIR[version]
        staged = {"viostor": "viostor", "vioscsi": "vioscsi", "netkvm": "netkvm", "balloon": "balloon",
                  "vioserial": "vioser"}
        boot = {name: (name, f"{name}.sys", sys_bytes(name, os_dir, "amd64")) for name in ("viostor", "vioscsi")}
    for package, base in staged.items():
        files = rb.listing(f"/Windows/Drivers/Sterna/{package}")
        expected = [f"{base}.cat", f"{base}.inf", f"{base}.sys"] + (["install.ps1"] if target == "aws" else [])
        assert sorted(f.lower() for f in files) == sorted(e.lower() for e in expected), (package, files)
    for service, (package, sys_name, content) in boot.items():
        # The amd64 build of this version's directory, both staged and where the boot loader reads it.
        assert rb.file(f"/Windows/Drivers/Sterna/{package}/{sys_name}") == content
        assert rb.file(f"/Windows/System32/drivers/{sys_name}") == content
        values = rb.values("SYSTEM", f"{CS}\\Services\\{service}")
        assert values is not None, service
        assert values["Start"] == (REG_DWORD, 0)
        assert values["Type"] == (REG_DWORD, 1)
        assert values["Group"] == (REG_SZ, "SCSI miniport")
        assert values["ImagePath"] == (REG_EXPAND_SZ, f"system32\\drivers\\{sys_name}")
    # The other target's drivers are not there: a KVM disk has no AWS driver, and the reverse.
    other = ("viostor", "vioscsi") if target == "aws" else ("AWSNVMe",)
    for service in other:
        assert rb.values("SYSTEM", f"{CS}\\Services\\{service}") is None, service


def critical_device_database_only_where_windows_uses_it(rb: Readback, version: str, target: str) -> None:
    entries = rb.subkeys("SYSTEM", f"{CS}\\Control\\CriticalDeviceDatabase")
    if version != "windows2008r2":  # Windows 8 / Server 2012 and later ignore it
        assert entries == []
        return
    ids = ({"8061": "AWSNVMe", "0061": "AWSNVMe"} if target == "aws"
           else {"1001": "viostor", "1042": "viostor", "1004": "vioscsi", "1048": "vioscsi"})
    ven = "1d0f" if target == "aws" else "1af4"
    expected = {f"pci#ven_{ven}&dev_{dev.lower()}&subsys_0001{ven}&rev_00": svc for dev, svc in ids.items()}
    assert sorted(entries) == sorted(expected)
    for key, service in expected.items():
        values = rb.values("SYSTEM", f"{CS}\\Control\\CriticalDeviceDatabase\\{key}")
        assert values == {"Service": (REG_SZ, service), "ClassGUID": (REG_SZ, "{4D36E97B-E325-11CE-BFC1-08002BE10318}")}


def startup_script_is_registered_and_does_the_first_boot_work(rb: Readback, version: str, target: str) -> None:
    index = 1 if version in EXISTING_GPO else 0  # such an image already had a startup script at 0
    ini = rb.file("/Windows/System32/GroupPolicy/Machine/Scripts/scripts.ini")
    assert ini is not None and ini[:2] == b"\xff\xfe"
    text = ini[2:].decode("utf-16-le")
    assert f"{index}CmdLine=C:\\Windows\\Sterna\\firstboot.cmd" in text
    if index:
        assert "0CmdLine=C:\\ops\\inventory.cmd" in text
    gpt = (rb.file("/Windows/System32/GroupPolicy/gpt.ini") or b"").decode()
    assert "{42B5FAAE-6536-11D2-AE5A-0000F87571E3}{40B6664F-4972-11D1-A7CA-0000F87571E3}" in gpt
    assert ("Version=4" if index else "Version=1") in gpt
    entry = rb.values("SOFTWARE", f"{SCRIPTS}\\{index}")
    assert entry is not None
    assert entry["Script"] == (REG_SZ, "C:\\Windows\\Sterna\\firstboot.cmd")
    assert entry["ExecTime"] == (REG_QWORD, 0)
    assert (rb.values("SOFTWARE", SCRIPTS) or {})["FileSysPath"] == (
        REG_SZ, "C:\\Windows\\System32\\GroupPolicy\\Machine")
    cmd = (rb.file("/Windows/Sterna/firstboot.cmd") or b"").decode()
    assert "firstboot.ps1" in cmd
    ps1 = (rb.file("/Windows/Sterna/firstboot.ps1") or b"").decode()
    for package in _packages(target):
        if version in ("windows2008r2", "windows2012r2"):  # pnputil before Windows 10 has only -i -a
            assert f"pnputil.exe -i -a 'C:\\Windows\\Drivers\\Sterna\\{package}\\*.inf'" in ps1
        else:
            assert f"pnputil.exe /add-driver 'C:\\Windows\\Drivers\\Sterna\\{package}\\*.inf' /subdirs /install" in ps1
    assert "C:\\Windows\\Sterna\\firstboot.log" in ps1
    assert "DisplayName -eq 'VMware Tools'" in ps1
    ip, _mask, gw, dns = STATIC_IP
    assert f"-IPAddress '{ip}' -PrefixLength 24 -DefaultGateway '{gw}'" in ps1
    assert f"-ServerAddresses '{dns}'" in ps1
    assert "C:\\Windows\\Sterna\\userscripts\\00.ps1" in ps1
    assert (rb.file("/Windows/Sterna/userscripts/00.ps1") or b"").decode() == FIRST_BOOT_SCRIPT
    # ... and it removes its own registration when done.
    assert f"Group Policy\\Scripts\\Startup\\0\\{index}' -ErrorAction" in ps1
    assert f"'^{index}(CmdLine|Parameters)='" in ps1


def cloudbase_init_is_staged_with_the_targets_metadata_service(
        rb: Readback, version: str, target: str, msi: bytes) -> None:
    assert rb.file("/Windows/Sterna/CloudbaseInitSetup_x64.msi") == msi
    for name in ("cloudbase-init.conf", "cloudbase-init-unattend.conf"):
        conf = (rb.file(f"/Windows/Sterna/{name}") or b"").decode()
        assert f"metadata_services={METADATA[target]}\r\n" in conf, (name, conf)
    ps1 = (rb.file("/Windows/Sterna/firstboot.ps1") or b"").decode()
    assert "'/i', 'C:\\Windows\\Sterna\\CloudbaseInitSetup_x64.msi', '/qn'" in ps1


def clock_san_policy_vmware_services_and_page_file(rb: Readback, version: str, target: str) -> None:
    assert rb.values("SYSTEM", f"{CS}\\Control\\TimeZoneInformation")["RealTimeIsUniversal"] == (REG_DWORD, 1)
    assert rb.values("SYSTEM", f"{CS}\\Services\\partmgr\\Parameters")["SanPolicy"] == (REG_DWORD, 1)
    assert rb.values("SYSTEM", f"{CS}\\Services\\VMTools")["Start"] == (REG_DWORD, 4)
    assert rb.values("SYSTEM", f"{CS}\\Services\\vmci")["Start"] == (REG_DWORD, 4)
    paging = rb.values("SYSTEM", f"{CS}\\Control\\Session Manager\\Memory Management")["PagingFiles"]
    assert paging == (REG_MULTI_SZ, ["C:\\pagefile.sys 0 0"])
    device_path = rb.values("SOFTWARE", "Microsoft\\Windows\\CurrentVersion")["DevicePath"][1]
    for package in _packages(target):
        assert f"%SystemRoot%\\Drivers\\Sterna\\{package}" in device_path, device_path


def everything(rb: Readback, version: str, target: str, msi: bytes) -> None:
    """Every check above, for one converted disk."""
    drivers_of_that_version_are_staged_and_the_disk_driver_starts_at_boot(rb, version, target)
    critical_device_database_only_where_windows_uses_it(rb, version, target)
    startup_script_is_registered_and_does_the_first_boot_work(rb, version, target)
    cloudbase_init_is_staged_with_the_targets_metadata_service(rb, version, target, msi)
    clock_san_policy_vmware_services_and_page_file(rb, version, target)
