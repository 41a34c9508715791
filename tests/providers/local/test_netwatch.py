"""Host-side network evidence from the pcap QEMU's ``filter-dump`` writes.

``dhclient-dhcp.pcap`` is real: QEMU (user networking, ``filter-dump``, the boot check's ``hostfwd`` probe)
booted the Debian 12 test guest's kernel with ISC dhclient as its init, which leased 10.0.2.15 from QEMU's
DHCP server, then sent frames from that address.
"""

from __future__ import annotations

from pathlib import Path

from providers.local.netwatch import PcapWatch

PCAP = Path(__file__).parent / "data" / "dhclient-dhcp.pcap"
MAC = "52:54:00:12:34:56"


def test_real_dhcp_exchange_gives_request_lease_and_use() -> None:
    watch = PcapWatch(PCAP, MAC)
    assert watch.poll() == ["dhcp-request", "address", "address-in-use"]
    ev = watch.evidence
    assert ev.complete and ev.address == "10.0.2.15"
    assert ev.signals["address"][1] == f"DHCPACK from the check's DHCP server: 10.0.2.15 leased to {MAC}"
    # host timestamps, in the order the frames crossed the NIC
    assert ev.signals["dhcp-request"][0] <= ev.signals["address"][0] <= ev.signals["address-in-use"][0]
    assert watch.poll() == []


def test_another_mac_proves_nothing() -> None:
    watch = PcapWatch(PCAP, "52:54:00:aa:bb:cc")
    assert watch.poll() == []
    assert not watch.evidence.complete and watch.evidence.address is None


def test_a_growing_file_is_read_frame_by_frame(tmp_path: Path) -> None:
    data = PCAP.read_bytes()
    growing = tmp_path / "nic.pcap"
    watch = PcapWatch(growing, MAC)
    assert watch.poll() == []  # QEMU has not created it yet
    seen: list[str] = []
    # written in odd-sized pieces, so headers and frames are cut anywhere
    for end in range(0, len(data) + 97, 97):
        growing.write_bytes(data[:end])
        seen += watch.poll()
    assert seen == ["dhcp-request", "address", "address-in-use"]
