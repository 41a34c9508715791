"""Host-side network evidence for a local boot check: what crossed the guest's NIC, read from QEMU.

The boot check gives the guest a virtio NIC on QEMU user-mode networking, a network the check owns:
QEMU is the DHCP server (10.0.2.2 / 10.0.2.3 on 10.0.2.0/24), and a ``filter-dump`` object writes
every frame of that netdev to a pcap file on the host. The guest's cooperation is not needed and its
console is not read: the frames say, with the host's own timestamps,

* ``dhcp-request``: the guest's NIC asked for an address (DHCPDISCOVER/REQUEST from its MAC), so the
  guest's network configuration covers this NIC;
* ``address``: the DHCP server acknowledged an address for that MAC (DHCPACK's yiaddr): the lease;
* ``address-in-use``: the guest then sent a frame *from* that address (ARP or IPv4: DNS, NTP...), so the
  address is configured on its interface, not only offered.

The pcap format (libpcap's classic file: a 24-byte header, then a 16-byte header per frame) and the
Ethernet/ARP/IPv4/UDP/BOOTP fields read here are fixed by their RFCs; only those fields are parsed.
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass, field
from pathlib import Path

_DHCP_DISCOVER, _DHCP_REQUEST, _DHCP_ACK = 1, 3, 5
_MAGIC = b"\x63\x82\x53\x63"


@dataclass
class NetEvidence:
    """What the host saw of one MAC: each signal's (host time, description)."""

    mac: str
    signals: dict[str, tuple[float, str]] = field(default_factory=dict)
    address: str | None = None

    @property
    def complete(self) -> bool:
        return "address-in-use" in self.signals


class PcapWatch:
    """Reads a growing pcap file written by QEMU's ``filter-dump`` and keeps the evidence for one MAC."""

    def __init__(self, path: Path, mac: str) -> None:
        self.path = path
        self.evidence = NetEvidence(mac=mac.lower())
        self._mac = bytes.fromhex(mac.replace(":", ""))
        self._offset = 0
        self._endian = "<"

    def poll(self) -> list[str]:
        """Read the frames written since the last call; returns the signals newly seen."""
        try:
            with self.path.open("rb") as f:
                f.seek(self._offset)
                data = f.read()
        except FileNotFoundError:
            return []
        pos, new = 0, []
        if self._offset == 0:
            if len(data) < 24:
                return []
            magic = data[:4]
            self._endian = "<" if magic in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1") else ">"
            pos = 24
        while pos + 16 <= len(data):
            sec, usec, incl, _orig = struct.unpack(self._endian + "IIII", data[pos:pos + 16])
            if pos + 16 + incl > len(data):
                break  # QEMU is still writing this frame
            new += self._frame(sec + usec / 1e6, data[pos + 16:pos + 16 + incl])
            pos += 16 + incl
        self._offset += pos
        return new

    def _seen(self, signal: str, when: float, what: str) -> list[str]:
        if signal in self.evidence.signals:
            return []
        self.evidence.signals[signal] = (when, what)
        return [signal]

    def _frame(self, when: float, frame: bytes) -> list[str]:
        if len(frame) < 14:
            return []
        dst, src, ethertype = frame[0:6], frame[6:12], struct.unpack("!H", frame[12:14])[0]
        body = frame[14:]
        mac = self.evidence.mac
        if ethertype == 0x0806 and len(body) >= 28 and src == self._mac:
            sender = str(ipaddress.IPv4Address(body[14:18]))
            if self.evidence.address and sender == self.evidence.address:
                return self._seen("address-in-use", when, f"ARP from {mac} as {sender}")
            return []
        if ethertype != 0x0800 or len(body) < 20:
            return []
        ihl = (body[0] & 0x0F) * 4
        proto = body[9]
        ip_src = str(ipaddress.IPv4Address(body[12:16]))
        new: list[str] = []
        if src == self._mac and self.evidence.address and ip_src == self.evidence.address:
            new += self._seen("address-in-use", when, f"IPv4 packet from {mac} with source {ip_src}")
        if proto != 17 or len(body) < ihl + 8:
            return new
        sport, dport = struct.unpack("!HH", body[ihl:ihl + 4])
        bootp = body[ihl + 8:]
        if {sport, dport} != {67, 68} or len(bootp) < 240 or bootp[236:240] != _MAGIC:
            return new
        if bootp[28:34] != self._mac:
            return new
        kind = _dhcp_type(bootp[240:])
        if src == self._mac and kind in (_DHCP_DISCOVER, _DHCP_REQUEST):
            new += self._seen("dhcp-request", when, f"DHCP {'DISCOVER' if kind == 1 else 'REQUEST'} from {mac}")
        elif dst in (self._mac, b"\xff" * 6) and kind == _DHCP_ACK:
            yiaddr = str(ipaddress.IPv4Address(bootp[16:20]))
            if self.evidence.address is None:
                self.evidence.address = yiaddr
            new += self._seen("address", when, f"DHCPACK from the check's DHCP server: {yiaddr} leased to {mac}")
        return new


def _dhcp_type(options: bytes) -> int | None:
    i = 0
    while i < len(options):
        code = options[i]
        if code == 255:
            return None
        if code == 0:
            i += 1
            continue
        if i + 1 >= len(options):
            return None
        length = options[i + 1]
        if code == 53 and length >= 1 and i + 2 < len(options):
            return options[i + 2]
        i += 2 + length
    return None
