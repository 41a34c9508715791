"""Converting a Windows guest offline for a target platform: drivers, registry, first-boot script.

Works on any ``Guest`` (a libguestfs-mounted NTFS system volume in production): files are copied in,
the SYSTEM and SOFTWARE hives are edited with hivex, and everything that needs Windows running (driver
installation through PnP, cloudbase-init's MSI, user scripts, VMware Tools' uninstaller) is left to a
Group Policy startup script. Every file written and every registry value set is a ``Change``.
"""

from __future__ import annotations

import posixpath

from osmorphing.editor import GuestEditor
from osmorphing.errors import UnsupportedOS
from osmorphing.guest import find_case_insensitive
from osmorphing.models import MorphOptions, OsInfo
from osmorphing.scripts import FIRST_BOOT, POST_MOUNT, PRE_MOUNT, for_phase, scripts_for
from osmorphing.winfirstboot import (
    GP_MACHINE,
    SCRIPTS_KEY,
    STATE_KEY,
    WIN_DIR,
    FirstBootPlan,
    StaticNic,
    cloudbase_conf,
    gpt_ini,
    launcher,
    powershell,
    scripts_ini,
    startup_index,
)
from osmorphing.wininf import InfDriver, decode_inf, parse_inf
from osmorphing.winreg import REG_EXPAND_SZ, REG_QWORD, Hive, Value
from osmorphing.winsources import (
    WINDOWS_TARGETS,
    DriverTree,
    WindowsSources,
    WindowsTarget,
    uses_critical_device_database,
    virtio_arch,
    virtio_os_dirs,
)

#: staged driver packages, relative to the system root (``C:\Windows\Drivers\Sterna\<driver>``)
DRIVER_STAGE = "Drivers/Sterna"
#: services of VMware Tools and VMware's virtual hardware that must not start on another hypervisor
VMWARE_SERVICES = ("VMTools", "vmvss", "VGAuthService", "vm3dservice", "vmci", "vmhgfs", "vmmemctl",
                   "vmmouse", "vmrawdsk", "vmusbmouse", "vsock", "VMwareCAFManagementAgentHost",
                   "VMwareCAFCommAmqpListener")
#: Services key "Group" for boot-start storage drivers when their INF names none
DEFAULT_BOOT_GROUP = "SCSI miniport"


def _win(path: str) -> str:
    """``/Windows/Drivers/x`` -> ``C:\\Windows\\Drivers\\x``."""
    return "C:" + path.replace("/", "\\")


class WindowsConverter:
    def __init__(self, editor: GuestEditor, info: OsInfo, target: str, options: MorphOptions,
                 sources: WindowsSources, source_platform: str | None) -> None:
        if target not in WINDOWS_TARGETS:
            raise UnsupportedOS(f"Windows guests cannot be converted for {target!r}; "
                                f"targets: {sorted(WINDOWS_TARGETS)}")
        self.editor = editor
        self.guest = editor.guest
        self.info = info
        self.spec: WindowsTarget = WINDOWS_TARGETS[target]
        self.options = options
        self.sources = sources
        self.source_platform = source_platform
        root = find_case_insensitive(self.guest, "/Windows")
        config = find_case_insensitive(self.guest, "/Windows/System32/config")
        if root is None or config is None:
            raise UnsupportedOS("no /Windows/System32/config in the guest: not a Windows system volume")
        self.root = root
        self.config = config

    # -- entry point --------------------------------------------------------------------------
    def convert(self) -> None:
        problems = self.sources.missing(self.spec.name)
        if problems:
            raise UnsupportedOS(f"{self.info.friendly_name or 'Windows'} for {self.spec.name}: "
                                + "; ".join(problems))
        scripts = scripts_for(self.options.user_scripts, "windows", self.options.instance_name)
        for phase in (PRE_MOUNT, POST_MOUNT):
            if for_phase(scripts, phase):
                self.editor.warn(f"{phase} user scripts cannot run on a Windows guest offline; "
                                 f"use {FIRST_BOOT} (run by the first-boot script)")
        system = Hive(self.editor, self._hive("SYSTEM"), "HKLM\\SYSTEM")
        software = Hive(self.editor, self._hive("SOFTWARE"), "HKLM\\SOFTWARE")
        try:
            cs = self._control_set(system)
            staged = self._drivers(system, cs, software)
            self._firstboot(software, staged, for_phase(scripts, FIRST_BOOT), self._static_nics(system, cs))
            self._platform_settings(system, cs)
            system.commit()
            software.commit()
        finally:
            system.discard()
            software.discard()

    def _hive(self, name: str) -> str:
        path = find_case_insensitive(self.guest, f"{self.config}/{name}")
        if path is None:
            raise UnsupportedOS(f"the {name} registry hive is missing from {self.config}")
        return path

    @staticmethod
    def _control_set(system: Hive) -> str:
        current = system.get("Select", "Current")
        return f"ControlSet{int(current) if isinstance(current, int) else 1:03d}"

    # -- drivers ------------------------------------------------------------------------------
    def _packages(self, tree: DriverTree) -> dict[str, str]:
        """Driver name -> its directory in the tree, for this Windows version and architecture."""
        wanted = self.spec.boot_drivers + self.spec.drivers
        found: dict[str, str] = {}
        if self.spec.driver_source == "virtio-win":
            os_dirs, arch = virtio_os_dirs(self.info), virtio_arch(self.info)
            if not os_dirs:
                raise UnsupportedOS(f"no virtio-win drivers exist for {self.info.friendly_name} "
                                    f"(version {self.info.version}, build {self.info.windows_build})")
            for driver in wanted:
                rel = next((d for os_dir in os_dirs if (d := tree.find_dir(driver, os_dir, arch))), None)
                if rel is None and driver in self.spec.boot_drivers:
                    raise UnsupportedOS(
                        f"virtio-win has no {driver} for {self.info.friendly_name} ({arch}): looked for "
                        + " and ".join(f"{tree.path}/{driver}/{d}/{arch}" for d in os_dirs))
                if rel is None:
                    self.editor.warn(f"virtio-win has no {driver}/{os_dirs[0]}/{arch} in {tree.path}")
                    continue
                found[driver] = rel
        else:
            for driver in wanted:
                rel = tree.find_inf(driver)
                if rel is None:
                    raise UnsupportedOS(f"no {driver}.inf under {tree.path} (AWS driver packages)")
                found[driver] = rel
        return found

    def _drivers(self, system: Hive, cs: str, software: Hive) -> list[str]:
        """Stage each package, make the disk drivers boot-start; return the staged Windows paths."""
        source = {"virtio-win": self.sources.virtio_win, "aws": self.sources.aws_drivers}.get(
            self.spec.driver_source or "")
        if source is None:
            self.editor.event(f"{self.spec.name}: Windows ships the drivers this platform needs; none injected")
            return []
        tree = DriverTree(source)
        staged = []
        try:
            for driver, rel in self._packages(tree).items():
                dest = f"{self.root}/{DRIVER_STAGE}/{driver}"
                files = tree.files(rel)
                for directory in sorted({posixpath.dirname(f"{dest}/{name}") for name in files}):
                    self.guest.mkdir_p(directory)
                for name in files:
                    self.guest.write_bytes(f"{dest}/{name}", tree.read(f"{rel}/{name}"))
                self.editor.record(dest, "created", f"driver package {driver} from {source}/{rel}: "
                                   + ", ".join(files))
                staged.append(_win(dest))
                if driver in self.spec.boot_drivers:
                    inf_name = next(n for n in files if n.lower() == f"{driver}.inf")
                    inf = parse_inf(decode_inf(tree.read(f"{rel}/{inf_name}")))
                    self._boot_start(system, cs, inf, tree, rel, files, driver)
        finally:
            tree.close()
        self._device_path(software, staged)
        return staged

    def _boot_start(self, system: Hive, cs: str, inf: InfDriver, tree: DriverTree, rel: str,
                    files: list[str], driver: str) -> None:
        if not inf.services:
            raise UnsupportedOS(f"{tree.path}/{rel}/{driver}.inf installs no service (no AddService)")
        service = inf.services[0]
        sys_name = next((n for n in files if n.lower() == service.binary.lower()), None)
        if sys_name is None:
            raise UnsupportedOS(f"{tree.path}/{rel} lacks {service.binary}, the driver {driver}.inf installs")
        drivers_dir = find_case_insensitive(self.guest, f"{self.root}/System32/drivers") or \
            f"{self.root}/System32/drivers"
        self.editor.write_binary(f"{drivers_dir}/{service.binary}", tree.read(f"{rel}/{sys_name}"),
                                 f"boot-critical disk driver {driver} (loaded by the boot loader)")
        system.set(f"{cs}\\Services\\{service.name}", {
            "Type": service.service_type, "Start": 0, "ErrorControl": service.error_control,
            "Group": service.load_order_group or DEFAULT_BOOT_GROUP,
            "ImagePath": f"system32\\drivers\\{service.binary}", "DisplayName": service.name,
        }, f"boot-start service of {driver} (Start=0: the boot loader loads it with the disk drivers)",
            {"ImagePath": REG_EXPAND_SZ})
        # virtio/NVMe miniports are PCI devices: the PnP interface type (5 = PCIBus) is allowed.
        system.set(f"{cs}\\Services\\{service.name}\\Parameters\\PnpInterface", {"5": 1},
                   f"{driver} may bind PCI devices")
        if uses_critical_device_database(self.info):
            for hwid in inf.hardware_ids:
                system.set(f"{cs}\\Control\\CriticalDeviceDatabase\\{hwid.lower().replace(chr(92), '#')}",
                           {"Service": service.name, "ClassGUID": inf.class_guid},
                           f"{hwid} is bound to {service.name} at boot (CriticalDeviceDatabase)")

    def _device_path(self, software: Hive, staged: list[str]) -> None:
        if not staged:
            return
        key = "Microsoft\\Windows\\CurrentVersion"
        current = software.get(key, "DevicePath")
        parts = [p for p in str(current or "%SystemRoot%\\inf").split(";") if p]
        add = [p.replace("C:\\Windows", "%SystemRoot%") for p in staged]
        merged = parts + [p for p in add if p not in parts]
        software.set(key, {"DevicePath": ";".join(merged)},
                     "PnP also searches the staged driver packages when it finds new devices",
                     {"DevicePath": REG_EXPAND_SZ})

    # -- first boot ---------------------------------------------------------------------------
    def _static_nics(self, system: Hive, cs: str) -> list[StaticNic]:
        if self.options.skip_network:
            # Windows keeps its own adapter settings; re-applying statics is this converter's only network step.
            self.editor.event("network step skipped at the user's request (destination_environment."
                              "skip_os_morphing_network): no static address re-applied at first boot"
                              + ("; keep_static_ip has no effect" if self.options.keep_static_ip else ""))
            return []
        if not self.options.keep_static_ip:
            return []
        base = f"{cs}\\Services\\Tcpip\\Parameters\\Interfaces"
        nics = []
        for guid in sorted(system.subkeys(base)):
            values = system.values(f"{base}\\{guid}")
            addresses = [a for a in _list(values.get("IPAddress")) if a and a != "0.0.0.0"]
            if values.get("EnableDHCP") == 0 and addresses:
                dns = [d for d in str(values.get("NameServer") or "").replace(",", " ").split() if d]
                nics.append(StaticNic(addresses, _list(values.get("SubnetMask")),
                                      _list(values.get("DefaultGateway")), dns))
        for nic in nics:
            self.editor.event(f"static IPv4 {', '.join(nic.addresses)} kept: re-applied at first boot")
        return nics

    def _firstboot(self, software: Hive, staged: list[str], user_scripts: list[tuple[str, str]],
                   static_nics: list[StaticNic]) -> None:
        home = f"{self.root}/Sterna"
        msi = None
        if self.spec.metadata_services and self.sources.cloudbase_init_msi is not None:
            msi_name = self.sources.cloudbase_init_msi.name
            self.editor.write_binary(f"{home}/{msi_name}", self.sources.cloudbase_init_msi.read_bytes(),
                                     f"cloudbase-init installer from {self.sources.cloudbase_init_msi}")
            msi = f"{WIN_DIR}\\{msi_name}"
            for name, unattend in (("cloudbase-init.conf", False), ("cloudbase-init-unattend.conf", True)):
                self.editor.write(f"{home}/{name}", cloudbase_conf(self.spec.metadata_services, unattend),
                                  f"cloudbase-init configuration for {self.spec.name} "
                                  f"({', '.join(s.rsplit('.', 1)[-1] for s in self.spec.metadata_services)})")
        elif self.spec.metadata_services:
            self.editor.warn(f"no cloudbase-init MSI: the guest gets no metadata agent on {self.spec.name}")
        script_paths = []
        for i, (payload, origin) in enumerate(user_scripts):
            path = f"{home}/userscripts/{i:02d}.ps1"
            self.editor.write(path, payload.replace("\r\n", "\n").replace("\n", "\r\n"),
                              f"user script {origin} (phase {FIRST_BOOT}), run by the first-boot script")
            script_paths.append(_win(path))
        gp = find_case_insensitive(self.guest, f"{self.root}/System32/GroupPolicy") or \
            f"{self.root}/System32/GroupPolicy"
        ini_path = f"{gp}/Machine/Scripts/scripts.ini"
        existing_ini = self._read_utf16(ini_path)
        index = startup_index(existing_ini)
        plan = FirstBootPlan(
            driver_dirs=staged,
            pnputil_legacy=self.info.version != "10.0",
            msi=msi,
            user_scripts=script_paths,
            remove_vmware_tools=self.options.remove_source_tools,
            static_nics=static_nics,
            script_index=index,
        )
        self.editor.write(f"{home}/firstboot.ps1", powershell(plan),
                          "first-boot script: drivers (pnputil), cloudbase-init, user scripts, VMware Tools "
                          f"removal; logs to {WIN_DIR}\\firstboot.log, then unregisters itself")
        self.editor.write(f"{home}/firstboot.cmd", launcher(), "starts firstboot.ps1 (startup scripts run via cmd)")
        self.guest.mkdir_p(f"{gp}/Machine/Scripts/Startup")
        self.editor.write_binary(ini_path, b"\xff\xfe" + scripts_ini(existing_ini, index).encode("utf-16-le"),
                                 f"machine startup script {index}: {WIN_DIR}\\firstboot.cmd")
        gpt_path = find_case_insensitive(self.guest, f"{gp}/gpt.ini") or f"{gp}/gpt.ini"
        old_gpt = self.guest.read_text(gpt_path) if self.guest.is_file(gpt_path) else ""
        self.editor.write(gpt_path, gpt_ini(old_gpt), "local Group Policy uses the scripts extension")
        entry: dict[str, Value] = {"GPO-ID": "LocalGPO", "SOM-ID": "Local", "FileSysPath": GP_MACHINE,
                 "DisplayName": "Local Group Policy", "GPOName": "Local Group Policy", "PSScriptOrder": 1}
        script: dict[str, Value] = {"Script": f"{WIN_DIR}\\firstboot.cmd", "Parameters": "", "IsPowershell": 0,
                                    "ExecTime": 0}
        for key in (SCRIPTS_KEY, STATE_KEY):
            software.set(f"{key}\\0", entry, "local Group Policy machine startup scripts")
            software.set(f"{key}\\0\\{index}", script, "Sterna's first-boot script, run once as SYSTEM at boot",
                         {"ExecTime": REG_QWORD})

    def _read_utf16(self, path: str) -> str:
        real = find_case_insensitive(self.guest, path)
        if real is None or not self.guest.is_file(real):
            return ""
        data = self.guest.read_bytes(real)
        if data[:2] == b"\xff\xfe":
            return data[2:].decode("utf-16-le", errors="replace")
        return data.decode("utf-8", errors="replace")

    # -- registry settings --------------------------------------------------------------------
    def _platform_settings(self, system: Hive, cs: str) -> None:
        utc = 1 if self.spec.rtc_utc else 0
        system.set(f"{cs}\\Control\\TimeZoneInformation", {"RealTimeIsUniversal": utc},
                   f"the {self.spec.name} hypervisor's clock runs in {'UTC' if utc else 'local time'}")
        system.set(f"{cs}\\Services\\partmgr\\Parameters", {"SanPolicy": 1},
                   "SAN policy OnlineAll: the migrated data disks come online")
        if self.options.remove_source_tools:
            for name in VMWARE_SERVICES:
                key = next((k for k in system.subkeys(f"{cs}\\Services") if k.lower() == name.lower()), None)
                if key is not None:
                    system.set(f"{cs}\\Services\\{key}", {"Start": 4},
                               "VMware service disabled (Start=4): no VMware hardware on the target")
        mm = f"{cs}\\Control\\Session Manager\\Memory Management"
        paging = _list(system.get(mm, "PagingFiles"))
        moved = [("C" + entry[1:]) if len(entry) > 1 and entry[1] == ":" and entry[0].upper() != "C" else entry
                 for entry in paging]
        if moved != paging:
            system.set(mm, {"PagingFiles": moved}, "page file moved to the system drive (C:): the source's "
                       "other drive (a cloud's temporary disk) does not follow the migration")


def _list(value: object) -> list[str]:
    if isinstance(value, list):
        return [str(v) for v in value]
    return [str(value)] if isinstance(value, str) and value else []


def convert_windows(editor: GuestEditor, info: OsInfo, target: str, options: MorphOptions,
                    sources: WindowsSources, source_platform: str | None = None) -> None:
    """Convert the mounted Windows guest behind ``editor`` for ``target`` (see ``WINDOWS_TARGETS``)."""
    WindowsConverter(editor, info, target, options, sources, source_platform).convert()
