"""The first-boot script Sterna leaves in a Windows guest, and its Group Policy registration.

Windows runs machine startup scripts of the local Group Policy as SYSTEM at boot, before logon; they
need only ``scripts.ini`` and the matching registry keys, all of which can be written offline. The
script (PowerShell, started by a ``.cmd``) installs the staged drivers with ``pnputil``, installs
cloudbase-init with the target's configuration, runs the first-boot user scripts, removes VMware
Tools, re-applies static addresses when asked, logs each step to ``C:\\Windows\\Sterna\\firstboot.log``
and finally removes its own registration.
"""

from __future__ import annotations

from dataclasses import dataclass, field

#: the script's home in the guest, as Windows spells it and as a guest path
WIN_DIR = "C:\\Windows\\Sterna"
LOG_FILE = WIN_DIR + "\\firstboot.log"
SCRIPTS_KEY = "Microsoft\\Windows\\CurrentVersion\\Group Policy\\Scripts\\Startup"
STATE_KEY = "Microsoft\\Windows\\CurrentVersion\\Group Policy\\State\\Machine\\Scripts\\Startup"
GP_MACHINE = "C:\\Windows\\System32\\GroupPolicy\\Machine"
#: Group Policy client-side extensions for scripts (processing, then the tool extension)
SCRIPTS_CSE = "[{42B5FAAE-6536-11D2-AE5A-0000F87571E3}{40B6664F-4972-11D1-A7CA-0000F87571E3}]"
CLOUDBASE_CONF_DIR = "C:\\Program Files\\Cloudbase Solutions\\Cloudbase-Init\\conf"


@dataclass
class StaticNic:
    """A statically configured interface of the source, re-applied to the n-th adapter on the target."""

    addresses: list[str]
    masks: list[str]
    gateways: list[str] = field(default_factory=list)
    dns: list[str] = field(default_factory=list)


@dataclass
class FirstBootPlan:
    driver_dirs: list[str]  # Windows paths of staged driver packages
    pnputil_legacy: bool  # Windows 8.1 / 2012 R2: pnputil -i -a
    msi: str | None  # Windows path of the staged cloudbase-init MSI
    user_scripts: list[str]  # Windows paths of staged user scripts (.ps1)
    remove_vmware_tools: bool
    static_nics: list[StaticNic]
    script_index: int  # our entry under Scripts\Startup\0


def _ps_quote(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def powershell(plan: FirstBootPlan) -> str:
    lines = [
        "# Written by Sterna's OS morphing; runs once as a Group Policy machine startup script.",
        "$ErrorActionPreference = 'Continue'",
        f"$log = {_ps_quote(LOG_FILE)}",
        "function Log($m) { Add-Content -Path $log -Value (\"{0:u} STERNA-FIRSTBOOT {1}\" -f (Get-Date), $m) }",
        "Log 'start'",
    ]
    for path in plan.driver_dirs:
        if plan.pnputil_legacy:
            cmd = f"pnputil.exe -i -a {_ps_quote(path + chr(92) + '*.inf')}"
        else:
            cmd = f"pnputil.exe /add-driver {_ps_quote(path + chr(92) + '*.inf')} /subdirs /install"
        lines.append(f"$out = & {cmd} 2>&1 | Out-String; Log (\"drivers {path}: exit $LASTEXITCODE \" + $out.Trim())")
    if plan.msi:
        lines += [
            f"$p = Start-Process msiexec.exe -Wait -PassThru -ArgumentList '/i', {_ps_quote(plan.msi)}, '/qn', "
            f"'/l*v', {_ps_quote(WIN_DIR + chr(92) + 'cloudbase-init-install.log')}, 'RUN_SERVICE_AS_LOCAL_SYSTEM=1'",
            "Log \"cloudbase-init install: exit $($p.ExitCode)\"",
            f"Copy-Item -Force {_ps_quote(WIN_DIR + chr(92) + 'cloudbase-init.conf')} "
            f"{_ps_quote(CLOUDBASE_CONF_DIR + chr(92) + 'cloudbase-init.conf')}",
            f"Copy-Item -Force {_ps_quote(WIN_DIR + chr(92) + 'cloudbase-init-unattend.conf')} "
            f"{_ps_quote(CLOUDBASE_CONF_DIR + chr(92) + 'cloudbase-init-unattend.conf')}",
            "Log 'cloudbase-init configured'",
        ]
    if plan.remove_vmware_tools:
        lines += [
            "$tools = Get-ItemProperty 'HKLM:\\SOFTWARE\\Microsoft\\Windows\\CurrentVersion\\Uninstall\\*' "
            "-ErrorAction SilentlyContinue | Where-Object { $_.DisplayName -eq 'VMware Tools' }",
            "foreach ($t in $tools) { $p = Start-Process msiexec.exe -Wait -PassThru -ArgumentList '/x', "
            "$t.PSChildName, '/qn', 'REBOOT=ReallySuppress'; Log \"VMware Tools removed: exit $($p.ExitCode)\" }",
        ]
    for i, nic in enumerate(plan.static_nics):
        lines.append(f"$a = Get-NetAdapter -Physical | Sort-Object ifIndex | Select-Object -Index {i}")
        for addr, mask in zip(nic.addresses, nic.masks, strict=False):
            prefix = sum(bin(int(o)).count("1") for o in mask.split("."))
            gw = f" -DefaultGateway {_ps_quote(nic.gateways[0])}" if nic.gateways and addr == nic.addresses[0] else ""
            lines.append(f"if ($a) {{ New-NetIPAddress -InterfaceIndex $a.ifIndex -IPAddress {_ps_quote(addr)} "
                         f"-PrefixLength {prefix}{gw} | Out-Null; Log \"static {addr}/{prefix} on $($a.Name)\" }}")
        if nic.dns:
            servers = ",".join(_ps_quote(d) for d in nic.dns)
            lines.append("if ($a) { Set-DnsClientServerAddress -InterfaceIndex $a.ifIndex "
                         f"-ServerAddresses {servers} }}")
    for path in plan.user_scripts:
        lines.append(f"$out = & powershell.exe -NoProfile -ExecutionPolicy Bypass -File {_ps_quote(path)} 2>&1 "
                     f"| Out-String; Log (\"user script {path}: exit $LASTEXITCODE \" + $out.Trim())")
    # Unregister: this entry from the registry (both views) and from scripts.ini, so it never runs again.
    n = plan.script_index
    lines += [
        f"Remove-Item -Recurse -Force 'HKLM:\\SOFTWARE\\{SCRIPTS_KEY}\\0\\{n}' -ErrorAction SilentlyContinue",
        f"Remove-Item -Recurse -Force 'HKLM:\\SOFTWARE\\{STATE_KEY}\\0\\{n}' -ErrorAction SilentlyContinue",
        f"$ini = {_ps_quote(GP_MACHINE + chr(92) + 'Scripts' + chr(92) + 'scripts.ini')}",
        f"(Get-Content $ini) | Where-Object {{ $_ -notmatch '^{n}(CmdLine|Parameters)=' }} "
        "| Set-Content -Encoding Unicode $ini",
        "Log 'done; unregistered'",
    ]
    return "\r\n".join(lines) + "\r\n"


def launcher() -> str:
    """The ``.cmd`` that scripts.ini names: startup scripts run through cmd, PowerShell's policy bypassed."""
    return (f"@echo off\r\npowershell.exe -NoProfile -ExecutionPolicy Bypass -File \"{WIN_DIR}\\firstboot.ps1\" "
            f">> \"{WIN_DIR}\\firstboot.out\" 2>&1\r\n")


def scripts_ini(existing: str, index: int) -> str:
    """``scripts.ini`` with our startup entry added at ``index`` (other sections and entries kept)."""
    ours = [f"{index}CmdLine={WIN_DIR}\\firstboot.cmd", f"{index}Parameters="]
    lines = [line for line in existing.replace("\r\n", "\n").split("\n") if line.strip()]
    if not any(line.strip().lower() == "[startup]" for line in lines):
        lines = ["[Startup]", *ours, *lines]
    else:
        at = next(i for i, line in enumerate(lines) if line.strip().lower() == "[startup]")
        lines[at + 1:at + 1] = ours
    return "\r\n" + "\r\n".join(lines) + "\r\n"


def startup_index(existing_ini: str) -> int:
    """The next free entry of ``[Startup]`` in an existing scripts.ini."""
    used, section = set(), ""
    for line in existing_ini.replace("\r\n", "\n").split("\n"):
        s = line.strip()
        if s.startswith("["):
            section = s.lower()
        elif section == "[startup]" and "CmdLine=" in s and s.split("CmdLine=")[0].isdigit():
            used.add(int(s.split("CmdLine=")[0]))
    return max(used) + 1 if used else 0


def gpt_ini(existing: str) -> str:
    """``GroupPolicy\\gpt.ini`` naming the scripts extensions for the machine, its version bumped."""
    version, other, machine = 0, [], ""
    for line in existing.replace("\r\n", "\n").split("\n"):
        key, _, value = line.partition("=")
        if key.strip().lower() == "version" and value.strip().isdigit():
            version = int(value.strip())
        elif key.strip().lower() == "gpcmachineextensionnames":
            machine = value.strip()
        elif line.strip() and line.strip().lower() != "[general]":
            other.append(line.strip())
    if SCRIPTS_CSE not in machine:
        machine = machine + SCRIPTS_CSE
    # The low word is the machine version: Group Policy reprocesses when it grows.
    lines = ["[General]", f"gPCMachineExtensionNames={machine}", f"Version={version + 1}", *other]
    return "\r\n".join(lines) + "\r\n"


def cloudbase_conf(metadata_services: tuple[str, ...], unattend: bool = False) -> str:
    lines = [
        "[DEFAULT]",
        "username=Admin",
        "groups=Administrators",
        "inject_user_password=true",
        "bsdtar_path=C:\\Program Files\\Cloudbase Solutions\\Cloudbase-Init\\bin\\bsdtar.exe",
        "mtools_path=C:\\Program Files\\Cloudbase Solutions\\Cloudbase-Init\\bin\\",
        "verbose=true",
        "logdir=C:\\Program Files\\Cloudbase Solutions\\Cloudbase-Init\\log\\",
        f"logfile={'cloudbase-init-unattend.log' if unattend else 'cloudbase-init.log'}",
        "logging_serial_port_settings=COM1,115200,N,8",
        "mtu_use_dhcp_config=true",
        "ntp_use_dhcp_config=true",
        "local_scripts_path=C:\\Program Files\\Cloudbase Solutions\\Cloudbase-Init\\LocalScripts\\",
        f"metadata_services={','.join(metadata_services)}",
        # The migrated guest keeps its identity: no sysprep-style hostname or disk changes.
        "plugins=cloudbaseinit.plugins.common.mtu.MTUPlugin,"
        "cloudbaseinit.plugins.common.sshpublickeys.SetUserSSHPublicKeysPlugin,"
        "cloudbaseinit.plugins.common.userdata.UserDataPlugin,"
        "cloudbaseinit.plugins.common.localscripts.LocalScriptsPlugin",
        "check_latest_version=false",
    ]
    if unattend:
        lines.append("stop_service_on_exit=false")
    return "\r\n".join(lines) + "\r\n"
