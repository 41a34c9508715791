"""Boot verification for the ``local`` destination: boot the migrated disk under QEMU (TCG) and read
its serial console.

A boot counts only when the console shows that *userspace* ran (a login prompt, systemd reaching the
multi-user target, cloud-init finishing, or the test guest's own report line); kernel messages alone are
not enough. ``scan_console`` holds that judgement and works on any console text, so cloud providers can
reuse it on what their console-output APIs return (EC2 GetConsoleOutput, GCE serial port output, Azure
boot diagnostics) when they implement ``BootVerifier``.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

#: lines that only a running userspace prints
USERSPACE_PATTERNS = (
    re.compile(r"\blogin:\s*$"),
    re.compile(r"Reached target .*(Multi-User System|Graphical Interface|Login Prompts|Cloud-init target)"),
    re.compile(r"Cloud-init v\. \S+ finished"),
    re.compile(r"STERNA-GUEST-(NO-)?IPV4"),
)
#: supporting lines, kept as evidence but not sufficient on their own
SUPPORTING_PATTERNS = (re.compile(r"Welcome to (?!.*Initramfs).*!"), re.compile(r"Started .*Getty"))
#: lines carrying the guest's IPv4 address (test-guest probe; cloud-init's ci-info table)
IPV4_PATTERNS = (
    re.compile(r"STERNA-GUEST-IPV4 \S+ (\d{1,3}(?:\.\d{1,3}){3})(?:/\d+)?"),
    re.compile(r"ci-info: \|\s*\S+\s*\|\s*True\s*\|\s*(\d{1,3}(?:\.\d{1,3}){3})\s*\|"),
)
#: the guest itself reports that no address came
NO_NETWORK_PATTERN = re.compile(r"STERNA-GUEST-NO-IPV4")
_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\r")


@dataclass
class ConsoleScan:
    """What a console text shows."""

    userspace_started: bool = False
    ipv4: str | None = None
    network_failed: bool = False
    evidence: list[str] = field(default_factory=list)


def scan_console(text: str) -> ConsoleScan:
    """Judge console output: did userspace start, which IPv4 did the guest report, and the proof lines."""
    scan = ConsoleScan()
    for raw in text.splitlines():
        line = _ANSI.sub("", raw).strip()
        if not line:
            continue
        proof = False
        if any(p.search(line) for p in USERSPACE_PATTERNS):
            scan.userspace_started = True
            proof = True
        if any(p.search(line) for p in SUPPORTING_PATTERNS):
            proof = True
        for pattern in IPV4_PATTERNS:
            m = pattern.search(line)
            if m and not m.group(1).startswith("127.") and scan.ipv4 is None:
                scan.ipv4 = m.group(1)
                proof = True
        if NO_NETWORK_PATTERN.search(line):
            scan.network_failed = True
            proof = True
        if proof and line not in scan.evidence:
            scan.evidence.append(line)
    return scan


@dataclass
class BootResult:
    """Outcome of ``boot_check``; ``evidence`` are the serial lines that prove it."""

    userspace_started: bool
    ipv4: str | None
    evidence: list[str]
    serial_log: Path
    elapsed: float = 0.0
    reason: str = ""

    @property
    def ok(self) -> bool:
        return self.userspace_started


def qemu_command(
    disk_path: str,
    fmt: str,
    serial_log: Path,
    *,
    memory_mb: int = 1024,
    mac: str = "52:54:00:12:34:56",
    firmware: str = "bios",
    disk_bus: str = "virtio",
) -> list[str]:
    """QEMU command line: TCG, the target's virtio disk and NIC, user-mode networking, serial to a file.

    ``disk_bus="nvme"`` attaches the disk as an NVMe controller instead, the way AWS Nitro instances
    see their EBS volumes.
    """
    if disk_bus not in ("virtio", "nvme"):
        raise ValueError(f"unknown disk bus {disk_bus!r}; expected virtio or nvme")
    # snapshot=on: the checked disk is never written; guest writes go to a discarded overlay.
    drive = f"file={disk_path},format={fmt},snapshot=on,cache=unsafe"
    disk = (["-drive", f"{drive},if=virtio"] if disk_bus == "virtio"
            else ["-drive", f"{drive},if=none,id=disk0", "-device", "nvme,drive=disk0,serial=sterna-boot"])
    argv = [
        "qemu-system-x86_64",
        "-accel",
        "tcg",
        "-cpu",
        "max",
        "-m",
        str(memory_mb),
        "-smp",
        "1",
        "-display",
        "none",
        "-nodefaults",
        "-no-reboot",
        "-monitor",
        "none",
        "-serial",
        f"file:{serial_log}",
        *disk,
        "-netdev",
        "user,id=net0",
        "-device",
        f"virtio-net-pci,netdev=net0,mac={mac}",
    ]
    if firmware == "uefi":
        for candidate in ("/usr/share/ovmf/OVMF.fd", "/usr/share/OVMF/OVMF.fd"):
            if Path(candidate).exists():
                argv += ["-bios", candidate]
                break
        else:
            raise FileNotFoundError("UEFI boot check needs OVMF (Debian package ovmf)")
    return argv


def boot_check(
    disk_path: str,
    fmt: str,
    *,
    timeout: float,
    workdir: Path,
    expect_network: bool = True,
    firmware: str = "bios",
    disk_bus: str = "virtio",
) -> BootResult:
    """Boot ``disk_path`` under QEMU and watch its serial console until it proves itself or time runs out.

    Returns as soon as userspace is seen (and, with ``expect_network``, an IPv4 address, or the guest's own
    report that none came). QEMU is always killed before returning. The disk is opened with
    ``snapshot=on`` and so is not modified.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    serial_log = workdir / "serial.log"
    serial_log.write_bytes(b"")
    argv = qemu_command(disk_path, fmt, serial_log, firmware=firmware, disk_bus=disk_bus)
    (workdir / "qemu.cmdline").write_text(" ".join(argv) + "\n")
    started = time.monotonic()
    qemu_err = open(workdir / "qemu.stderr", "wb")  # noqa: SIM115 - closed in finally
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=qemu_err, start_new_session=True)
    scan = ConsoleScan()
    reason = "timeout"
    try:
        while time.monotonic() - started < timeout:
            time.sleep(0.5)
            scan = scan_console(serial_log.read_text(errors="replace"))
            if scan.userspace_started and (not expect_network or scan.ipv4 or scan.network_failed):
                reason = (
                    "network" if scan.ipv4 else "no-network-reported" if scan.network_failed else "userspace"
                )
                break
            if proc.poll() is not None:
                reason = f"qemu exited with status {proc.returncode}"
                break
    finally:
        _stop(proc)
        qemu_err.close()
    scan = scan_console(serial_log.read_text(errors="replace"))
    if reason.startswith("qemu exited") and proc.returncode not in (0, None):
        err = (workdir / "qemu.stderr").read_text(errors="replace").strip()
        reason += f": {err[-500:]}"
    return BootResult(
        userspace_started=scan.userspace_started,
        ipv4=scan.ipv4,
        evidence=scan.evidence,
        serial_log=serial_log,
        elapsed=time.monotonic() - started,
        reason=reason,
    )


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is not None:
        return
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
