"""From a finished boot check to the task's events or its error: a terminal console state is a
non-retryable error quoting the line; no verdict is retryable; a boot without network says why."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from activities.failures import to_application_error
from core.errors import BootFailed, BootInconclusive
from providers.local.boot import BootResult, boot_verdict, no_network_reason
from providers.local.console import HOST_TOO_SLOW, scan_console
from providers.local.netwatch import PcapWatch

MAC = "52:54:00:12:34:56"
ALERT = "ALERT!  /dev/sda2 does not exist.  Dropping to a shell!"


def test_terminal_state_is_a_non_retryable_error_quoting_the_line() -> None:
    result = BootResult(outcome="failed", reason="root device missing", failure=("root device missing", ALERT),
                        stages={"kernel": (40.0, "Linux version 6.1"), "initramfs": (80.0, "Run /init")},
                        serial_log=Path("/x/serial.log"), elapsed=130.0)
    with pytest.raises(BootFailed) as info:
        boot_verdict(result)
    assert ALERT in info.value.message
    assert "ended on the console line" in info.value.message
    err = to_application_error(info.value)
    assert (err.type, err.non_retryable) == ("BootFailed", True)


def test_a_timer_check_panic_is_the_hosts_doing_and_retryable() -> None:
    # Seen on a TCG guest at load 14: the emulated CPU missed the ticks the kernel counts at start.
    line = ("[    0.016000] ---[ end Kernel panic - not syncing: IO-APIC + timer doesn't work!  Boot with "
            "apic=debug and send a report.  Then try booting with the 'noapic' option. ]---")
    state = scan_console(line + "\n")
    assert state.failure == (HOST_TOO_SLOW, line.strip())
    result = BootResult(outcome="failed", reason="", failure=state.failure, stages={"kernel": (1.0, "Linux")},
                        serial_log=Path("/x/serial.log"), elapsed=55.0)
    with pytest.raises(BootInconclusive) as info:
        boot_verdict(result)
    assert "IO-APIC + timer" in info.value.message
    assert to_application_error(info.value).non_retryable is False


def test_no_verdict_is_retryable_and_names_the_last_stage() -> None:
    result = BootResult(outcome="timeout", reason="no verdict within the 600s timeout",
                        stages={"kernel": (40.0, "Linux version 6.1")}, elapsed=600.0)
    with pytest.raises(BootInconclusive) as info:
        boot_verdict(result)
    assert "last stage seen: kernel at 40s" in info.value.message
    assert to_application_error(info.value).non_retryable is False


def test_booted_with_host_side_network_evidence() -> None:
    result = BootResult(
        outcome="booted", reason="evidence complete: userspace on the console, address leased and answering",
        stages={"kernel": (40.0, "Linux version"), "userspace": (66.0, "Reached target Multi-User System.")},
        network={"dhcp-request": (60.0, "DHCP DISCOVER from 52:54:00:12:34:56"),
                 "address": (61.0, "DHCPACK ... 10.0.2.15"), "address-in-use": (70.0, "IPv4 packet ...")},
        address="10.0.2.15", elapsed=71.0)
    lines = boot_verdict(result)
    assert lines[0].startswith("ended: evidence complete")
    assert lines[1] == "timeline: kernel 40s, dhcp-request 60s, address 61s, userspace 66s, address-in-use 70s"
    assert lines[-1].startswith("Booted: userspace at 66s (console); IPv4 10.0.2.15 leased by DHCP at 61s "
                                "and in use at 70s")


def test_booted_without_network_says_why() -> None:
    why = "the guest never asked for an address on its NIC"
    result = BootResult(outcome="booted-without-network", reason=f"booted without network: {why}",
                        stages={"userspace": (66.0, "login:")}, elapsed=190.0)
    lines = boot_verdict(result)
    assert lines[0] == f"ended: booted without network: {why}"
    assert lines[-1] == f"Booted without network: userspace at 66s; {why}"


def test_an_inconclusive_check_is_retried_once_only() -> None:
    from activities.steps import retry_once

    first = BootInconclusive("The guest did not reach userspace: no verdict within the 600s timeout")
    assert retry_once(first, 1) is first
    again = retry_once(first, 2)
    assert isinstance(again, BootFailed) and "attempt 2: not retried again" in again.message
    assert to_application_error(again).non_retryable


def _recorded_until(signals: list[str], folder: Path) -> PcapWatch:
    """A watch over the longest prefix of the recorded DHCP exchange (``test_netwatch.py``) whose frames show
    exactly ``signals``: the NIC as the host saw it when a boot check stopped waiting at that point."""
    data = (Path(__file__).parent / "data" / "dhclient-dhcp.pcap").read_bytes()
    ends, pos = [24], 24
    while pos + 16 <= len(data):
        pos += 16 + struct.unpack("<I", data[pos + 8:pos + 12])[0]
        ends.append(pos)
    chosen = None
    for n, end in enumerate(ends):
        (folder / f"{n}.pcap").write_bytes(data[:end])
        watch = PcapWatch(folder / f"{n}.pcap", MAC)
        watch.poll()
        if list(watch.evidence.signals) == signals:
            chosen = watch
    assert chosen is not None, signals
    return chosen


@pytest.mark.parametrize(("signals", "why"), [
    ([], f"the guest never asked for an address on its NIC ({MAC}): no DHCP request in 120s after userspace, "
         "so its network configuration does not cover this interface"),
    (["dhcp-request"], f"the guest asked for an address by DHCP but never completed the exchange ({MAC})"),
    (["dhcp-request", "address"], f"10.0.2.15 was leased to {MAC} but the guest never used it or answered the "
                                  "host's probe in 120s"),
])
def test_no_network_reason_follows_how_far_the_nic_got(tmp_path: Path, signals: list[str], why: str) -> None:
    assert no_network_reason(_recorded_until(signals, tmp_path), 120) == f"booted without network: {why}"
