"""``keep_static_ip``: static addresses survive, moved to the new interface names, in the guest's style."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import yaml

from osmorphing import DirectoryGuest, MorphOptions, TargetNic, morph_guest
from osmorphing.netconf import read_network

CASES = {
    # tree: (address, gateway, file written)
    "debian": ("10.20.30.40/24", "10.20.30.1", "/etc/network/interfaces"),
    "ubuntu": ("192.168.50.10/24", "192.168.50.1", "/etc/netplan/50-sterna.yaml"),
    "rhel": ("172.16.5.20/24", "172.16.5.1", "/etc/sysconfig/network-scripts/ifcfg-eth0"),
    "rocky": (
        "172.16.9.20/24",
        "172.16.9.1",
        "/etc/NetworkManager/system-connections/sterna-eth0.nmconnection",
    ),
    "sles": ("10.9.8.7/24", "10.9.8.1", "/etc/sysconfig/network/ifcfg-eth0"),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_static_address_moves_to_eth0(make_guest: Callable[[str], DirectoryGuest], name: str) -> None:
    address, gateway, written = CASES[name]
    guest = make_guest(name)
    report = morph_guest(
        guest, target_platform="kvm", source_platform="vmware", options=MorphOptions(keep_static_ip=True)
    )
    assert ("created" if name in ("ubuntu", "rhel", "rocky") else "modified", written) in {
        (c.action, c.path) for c in report.changes
    }
    state = read_network(guest)
    assert [(i.name, i.mode, i.addresses, i.mac_address) for i in state.interfaces] == [
        ("eth0", "static", [address], None)
    ]
    assert state.pin_files == []
    if name != "sles":  # wicked keeps the default route in ifroute-eth0
        assert state.interfaces[0].gateway == gateway
    else:
        assert guest.read_text("/etc/sysconfig/network/ifroute-eth0") == "default 10.9.8.1 - eth0\n"
    if "cloud-init" in report.os_info.agents:
        assert "network: {config: disabled}" in guest.read_text("/etc/cloud/cloud.cfg.d/95-sterna.cfg")


def test_one_dhcp_interface_per_target_nic(make_guest: Callable[[str], DirectoryGuest]) -> None:
    guest = make_guest("ubuntu")
    nics = [TargetNic(mac_address="fa:16:3e:00:00:01", network_name="a"), TargetNic(network_name="b")]
    morph_guest(guest, target_platform="kvm", source_platform="vmware", options=MorphOptions(nics=nics))
    doc = yaml.safe_load(guest.read_text("/etc/netplan/50-sterna.yaml"))
    assert doc == {"network": {"version": 2, "ethernets": {"eth0": {"dhcp4": True}, "eth1": {"dhcp4": True}}}}
