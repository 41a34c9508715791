"""Boot verification for the ``local`` destination: boot the migrated disk under QEMU (TCG) and watch it
from the host.

Two independent witnesses, neither of which needs the guest to cooperate:

* the serial console, judged by ``providers.local.console`` (generic stage markers and terminal failure
  states, nothing specific to Sterna's test guest);
* the guest's NIC, on a QEMU user-mode network the check owns: QEMU is its DHCP server, a
  ``filter-dump`` writes every frame to a pcap file (``providers.local.netwatch``), and a TCP probe from
  the host (a ``hostfwd`` port) makes the guest's kernel answer from its address once it has one.

The check ends as soon as its evidence is complete (userspace on the console, and the address leased
*and* answering), at once on a terminal console state (``ALERT!``, kernel panic, emergency mode, GRUB
rescue, no bootable device), ``network_grace`` seconds after userspace when the NIC never got an
address, or at the timeout. It never waits for the guest to power off. Every stage's time is when the
stage was seen (console: when the line was read; network: the host timestamp of the frame).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from core.errors import BootFailed, BootInconclusive
from providers.local.console import HOST_TOO_SLOW, ConsoleWatch
from providers.local.netwatch import PcapWatch

#: the guest's TCP port the host's probe is forwarded to (any port: its kernel answers either way)
GUEST_PORT = 22
#: QEMU's stderr when the probe's host port was taken between ``_free_port`` and QEMU's own bind
PORT_TAKEN = "Could not set up host forwarding rule"
#: how many times a boot is started again on a new port after that race (each costs QEMU's start only)
PORT_RACES = 3
#: ``on_progress(stage, seconds_since_power_on, what)``
ProgressFn = Callable[[str, float, str], None]


@dataclass
class BootResult:
    """Outcome of ``boot_check``.

    ``outcome``: ``booted`` (userspace and network proven), ``booted-without-network``, ``failed`` (a
    terminal console state; ``failure`` holds its kind and line), ``timeout`` or ``qemu-exited``.
    ``stages``/``network`` map each stage or signal to (seconds since power-on, the line or frame).
    """

    outcome: str
    reason: str
    stages: dict[str, tuple[float, str]] = field(default_factory=dict)
    network: dict[str, tuple[float, str]] = field(default_factory=dict)
    address: str | None = None
    failure: tuple[str, str] | None = None
    serial_log: Path = Path()
    pcap: Path = Path()
    elapsed: float = 0.0

    @property
    def userspace_started(self) -> bool:
        return "userspace" in self.stages


def qemu_command(
    disk_path: str,
    fmt: str,
    serial_log: Path,
    *,
    memory_mb: int = 1024,
    mac: str = "52:54:00:12:34:56",
    firmware: str = "bios",
    disk_bus: str = "virtio",
    pcap: Path | None = None,
    probe_port: int | None = None,
) -> list[str]:
    """QEMU command line: TCG, the target's virtio disk and NIC, user-mode networking, serial to a file.

    ``disk_bus="nvme"`` attaches the disk as an NVMe controller instead, the way AWS Nitro instances
    see their EBS volumes; ``"virtio-scsi"`` as a SCSI disk on a virtio-scsi controller, the way GCE
    attaches persistent disks. ``pcap`` dumps the NIC's frames there; ``probe_port`` forwards that host
    loopback port to the guest's TCP port 22 (the host's probe).
    """
    # snapshot=on: the checked disk is never written; guest writes go to a discarded overlay.
    drive = f"file={disk_path},format={fmt},snapshot=on,cache=unsafe"
    buses = {
        "virtio": ["-drive", f"{drive},if=virtio"],
        "nvme": ["-drive", f"{drive},if=none,id=disk0", "-device", "nvme,drive=disk0,serial=sterna-boot"],
        "virtio-scsi": ["-device", "virtio-scsi-pci,id=scsi0", "-drive", f"{drive},if=none,id=disk0",
                        "-device", "scsi-hd,drive=disk0,bus=scsi0.0"],
    }
    if disk_bus not in buses:
        raise ValueError(f"unknown disk bus {disk_bus!r}; expected one of {', '.join(buses)}")
    disk = buses[disk_bus]
    netdev = "user,id=net0"
    if probe_port is not None:
        netdev += f",hostfwd=tcp:127.0.0.1:{probe_port}-:{GUEST_PORT}"
    argv = [
        "qemu-system-x86_64", "-accel", "tcg", "-cpu", "max", "-m", str(memory_mb), "-smp", "1",
        "-display", "none", "-nodefaults", "-no-reboot", "-monitor", "none",
        "-serial", f"file:{serial_log}",
        *disk,
        "-netdev", netdev,
        "-device", f"virtio-net-pci,netdev=net0,mac={mac}",
    ]
    if pcap is not None:
        argv += ["-object", f"filter-dump,id=dump0,netdev=net0,file={pcap}"]
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
    network_grace: float = 120.0,
    firmware: str = "bios",
    disk_bus: str = "virtio",
    mac: str = "52:54:00:12:34:56",
    on_progress: ProgressFn | None = None,
) -> BootResult:
    """Boot ``disk_path`` under QEMU and watch its console and NIC until the evidence is complete.

    QEMU is always killed before returning; the disk is opened with ``snapshot=on`` and not modified.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    serial_log, pcap = workdir / "serial.log", workdir / "nic.pcap"
    serial_log.write_bytes(b"")
    pcap.unlink(missing_ok=True)
    port, port_races = 0, 0

    def launch() -> subprocess.Popen[bytes]:
        nonlocal port
        # The probe port is only free when picked: anything on the host may bind it before QEMU does.
        port = _free_port()
        argv = qemu_command(disk_path, fmt, serial_log, firmware=firmware, disk_bus=disk_bus, mac=mac, pcap=pcap,
                            probe_port=port)
        (workdir / "qemu.cmdline").write_text(" ".join(argv) + "\n")
        with open(workdir / "qemu.stderr", "wb") as qemu_err:
            return subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=qemu_err, start_new_session=True)

    proc = launch()
    started, wall_start = time.monotonic(), time.time()
    console = ConsoleWatch(clock=lambda: time.monotonic() - started)
    net = PcapWatch(pcap, mac)
    outcome, reason = "timeout", f"no verdict within the {timeout:.0f}s timeout"
    offset, last_probe = 0, 0.0

    def report(stage: str, at: float, what: str) -> None:
        if on_progress is not None:
            on_progress(stage, at, what)

    try:
        with serial_log.open("rb") as serial:
            while True:
                now = time.monotonic() - started
                serial.seek(offset)
                chunk = serial.read()
                offset += len(chunk)
                for stage in console.feed(chunk.decode(errors="replace")):
                    at, line = console.state.stages[stage]
                    report(stage, at, f"console: {line}")
                for sig in net.poll():
                    at, what = net.evidence.signals[sig]
                    report(sig, max(0.0, at - wall_start), f"host-side: {what}")
                state = console.state
                if state.failure is not None and (console.failure_final(now) or proc.poll() is not None
                                                  or now >= timeout):
                    kind, line = state.failure
                    outcome, reason = "failed", f"{kind}: the console showed {line!r}; a boot never leaves this state"
                    break
                if state.userspace_started and (not expect_network or net.evidence.complete):
                    outcome = "booted"
                    reason = ("evidence complete: userspace on the console" +
                              (", address leased and answering the host's probe" if expect_network else ""))
                    break
                if expect_network and state.userspace_started:
                    waited = now - state.stages["userspace"][0]
                    if waited > network_grace:
                        outcome, reason = "booted-without-network", no_network_reason(net, network_grace)
                        break
                if net.evidence.address and not net.evidence.complete and now - last_probe > 3:
                    last_probe = now
                    _probe(port)
                if proc.poll() is not None:
                    err = (workdir / "qemu.stderr").read_text(errors="replace").strip()
                    # QEMU sets up its netdevs before the guest runs: nothing of the guest was seen yet.
                    if PORT_TAKEN in err and port_races < PORT_RACES:
                        port_races += 1
                        proc = launch()
                        continue
                    outcome = "qemu-exited"
                    reason = f"QEMU exited with status {proc.returncode} before a verdict" + (
                        f": {err[-500:]}" if proc.returncode else " (the guest powered off or rebooted)")
                    break
                if now >= timeout:
                    break
                time.sleep(0.5)
    finally:
        _stop(proc)
    net.poll()
    return BootResult(
        outcome=outcome, reason=reason, stages=dict(console.state.stages),
        network={k: (max(0.0, t - wall_start), w) for k, (t, w) in net.evidence.signals.items()},
        address=net.evidence.address, failure=console.state.failure, serial_log=serial_log, pcap=pcap,
        elapsed=time.monotonic() - started,
    )


def boot_verdict(result: BootResult) -> list[str]:
    """The task events for a finished check, or the error it ends with.

    A terminal console state raises ``BootFailed`` quoting the line (the same disk fails the same way
    again); no verdict raises ``BootInconclusive`` (the activity allows one more attempt).
    """
    if result.outcome == "failed" and result.failure is not None and result.failure[0] == HOST_TOO_SLOW:
        raise BootInconclusive(f"The boot check could not judge the guest: {HOST_TOO_SLOW}: the console showed "
                               f"{result.failure[1]!r} after {result.elapsed:.0f}s (serial log {result.serial_log})")
    if result.outcome == "failed" and result.failure is not None:
        kind, line = result.failure
        seen = [s for s in result.stages if s != "userspace"]
        raise BootFailed(f"The guest cannot boot ({kind}); the check ended on the console line {line!r} "
                         f"after {result.elapsed:.0f}s (stages seen: {', '.join(seen) or 'none'}; "
                         f"serial log {result.serial_log})")
    if not result.userspace_started:
        last = max(result.stages.items(), key=lambda kv: kv[1][0], default=None)
        where = f"last stage seen: {last[0]} at {last[1][0]:.0f}s, {last[1][1]!r}" if last else "nothing on the console"
        raise BootInconclusive(f"The guest did not reach userspace: {result.reason} ({where}; serial log "
                               f"{result.serial_log})")
    lines = [f"ended: {result.reason}"]
    # When each stage was seen (the stage events carry the lines that showed them)
    timeline: list[tuple[str, tuple[float, str]]] = sorted([*result.stages.items(), *result.network.items()],
                                                            key=lambda kv: kv[1][0])
    lines.append("timeline: " + ", ".join(f"{name} {at:.0f}s" for name, (at, _) in timeline))
    userspace = result.stages["userspace"][0]
    if result.outcome == "booted" and "address-in-use" in result.network:
        lines.append(f"Booted: userspace at {userspace:.0f}s (console); IPv4 {result.address} leased by DHCP at "
                     f"{result.network['address'][0]:.0f}s and in use at {result.network['address-in-use'][0]:.0f}s "
                     "(host-side, from the NIC's frames)")
    elif result.outcome == "booted-without-network":
        why = result.reason.removeprefix("booted without network: ")
        lines.append(f"Booted without network: userspace at {userspace:.0f}s; {why}")
    else:
        lines.append(f"Booted: userspace at {userspace:.0f}s (console); network not proven ({result.reason})")
    return lines


def no_network_reason(net: PcapWatch, grace: float) -> str:
    """Why a guest in userspace has no network, from the host-side signals of its NIC alone: its configuration
    does not cover the NIC (no DHCP request), the exchange stopped half-way, or the lease went unused."""
    ev = net.evidence
    if "dhcp-request" not in ev.signals:
        why = (f"the guest never asked for an address on its NIC ({ev.mac}): no DHCP request in {grace:.0f}s "
               "after userspace, so its network configuration does not cover this interface")
    elif "address" not in ev.signals:
        why = f"the guest asked for an address by DHCP but never completed the exchange ({ev.mac})"
    else:
        why = (f"{ev.address} was leased to {ev.mac} but the guest never used it or answered the host's probe "
               f"in {grace:.0f}s")
    return f"booted without network: {why}"


def _probe(port: int) -> None:
    """Connect to the forwarded port: QEMU then sends a SYN to the guest, whose kernel answers (SYN-ACK or
    RST) from its address whether or not anything listens. The answer is read from the pcap, not here."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            pass
    except OSError:
        pass


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is not None:
        return
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
