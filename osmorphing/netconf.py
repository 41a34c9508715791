"""Reading and writing the guest's network configuration, in each style Linux distributions use.

Styles: ``netplan`` (Ubuntu), ``ifupdown`` (Debian), ``networkmanager`` (keyfiles, RHEL 9+, SLES 16),
``ifcfg`` (RHEL/CentOS ``network-scripts``), ``wicked`` (SUSE ``sysconfig/network``) and
``systemd-networkd``. MAC pins are read from udev ``70-persistent-net.rules`` and systemd ``.link`` files.
"""

from __future__ import annotations

import configparser
import posixpath
import re
from dataclasses import dataclass, field

import yaml

from osmorphing.guest import Guest
from osmorphing.models import NetworkInterface

IFUPDOWN_MAIN = "/etc/network/interfaces"
IFUPDOWN_DIR = "/etc/network/interfaces.d"
NETPLAN_DIR = "/etc/netplan"
NM_DIR = "/etc/NetworkManager/system-connections"
IFCFG_DIR = "/etc/sysconfig/network-scripts"
WICKED_DIR = "/etc/sysconfig/network"
NETWORKD_DIR = "/etc/systemd/network"
UDEV_NET_RULES = (
    "/etc/udev/rules.d/70-persistent-net.rules",
    "/etc/udev/rules.d/75-persistent-net-generator.rules",
)


@dataclass
class NetworkState:
    """Interfaces found per style, the files that configure them, and the MAC-pinning files."""

    styles: list[str] = field(default_factory=list)
    interfaces: list[NetworkInterface] = field(default_factory=list)
    #: files that configure a non-loopback interface (to be replaced), in discovery order
    config_files: list[str] = field(default_factory=list)
    #: udev rules / .link files that pin interface names to MAC addresses
    pin_files: list[str] = field(default_factory=list)


def read_network(guest: Guest) -> NetworkState:
    """Find every network configuration style present in the guest and the interfaces it configures."""
    state = NetworkState()
    for style, reader in (
        ("netplan", _read_netplan),
        ("networkmanager", _read_nm),
        ("ifcfg", _read_ifcfg),
        ("wicked", _read_wicked),
        ("ifupdown", _read_ifupdown),
        ("systemd-networkd", _read_networkd),
    ):
        present, ifaces, files = reader(guest)
        if present:
            state.styles.append(style)
        for iface in ifaces:
            if iface.name != "lo":
                state.interfaces.append(iface)
        state.config_files.extend(f for f in files if f not in state.config_files)
    state.pin_files = _read_pins(guest, state)
    return state


# -- readers ---------------------------------------------------------------------------------------
def _read_ifupdown(guest: Guest) -> tuple[bool, list[NetworkInterface], list[str]]:
    if not guest.is_file(IFUPDOWN_MAIN):
        return False, [], []
    ifaces: list[NetworkInterface] = []
    files: list[str] = []
    for path in [IFUPDOWN_MAIN, *guest.glob(IFUPDOWN_DIR)]:
        if not guest.is_file(path):
            continue
        found = parse_ifupdown(guest.read_text(path), path)
        ifaces.extend(found)
        if any(i.name != "lo" for i in found):
            files.append(path)
    return True, ifaces, files


def parse_ifupdown(text: str, source: str) -> list[NetworkInterface]:
    """``iface`` stanzas of an ifupdown file (IPv4 ``inet`` ones carry the mode)."""
    ifaces: list[NetworkInterface] = []
    current: NetworkInterface | None = None
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].strip()
        words = line.split()
        if not words:
            continue
        if words[0] == "iface" and len(words) >= 4:
            method = words[3]
            mode = "dhcp" if method == "dhcp" else "static" if method == "static" else "other"
            current = NetworkInterface(name=words[1], style="ifupdown", mode=mode, source=source)
            if words[2] == "inet" or not any(i.name == words[1] for i in ifaces):
                ifaces.append(current)
            continue
        if words[0] in ("auto", "allow-hotplug", "source", "source-directory", "mapping") or words[
            0
        ].startswith("allow-"):
            current = None
            continue
        if current is None or len(words) < 2:
            continue
        if words[0] == "address":
            current.addresses.append(words[1])
        elif words[0] == "netmask" and current.addresses and "/" not in current.addresses[-1]:
            current.addresses[-1] += f"/{_mask_to_prefix(words[1])}"
        elif words[0] == "gateway":
            current.gateway = words[1]
        elif words[0] == "hwaddress":
            current.mac_address = words[-1].lower()
    return ifaces


def _read_netplan(guest: Guest) -> tuple[bool, list[NetworkInterface], list[str]]:
    paths = guest.glob(NETPLAN_DIR, suffix=".yaml")
    ifaces: list[NetworkInterface] = []
    files: list[str] = []
    for path in paths:
        try:
            doc = yaml.safe_load(guest.read_text(path)) or {}
        except yaml.YAMLError:
            continue
        ethernets = ((doc.get("network") or {}).get("ethernets") or {}) if isinstance(doc, dict) else {}
        for key, raw_conf in ethernets.items():
            conf = raw_conf or {}
            match = conf.get("match") or {}
            name = conf.get("set-name") or match.get("name") or key
            addrs = [str(a) for a in conf.get("addresses") or []]
            gateway = conf.get("gateway4")
            for route in conf.get("routes") or []:
                if str(route.get("to")) in ("default", "0.0.0.0/0"):
                    gateway = route.get("via")
            mode = "dhcp" if conf.get("dhcp4") in (True, "true", "yes") else "static" if addrs else "other"
            mac = match.get("macaddress")
            ifaces.append(
                NetworkInterface(
                    name=str(name),
                    style="netplan",
                    mode=mode,
                    addresses=addrs,
                    gateway=gateway,
                    mac_address=mac.lower() if mac else None,
                    source=path,
                )
            )
        if ethernets:
            files.append(path)
    return bool(paths), ifaces, files


def _ini(text: str) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(interpolation=None, strict=False)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string(text)
    return parser


def _read_nm(guest: Guest) -> tuple[bool, list[NetworkInterface], list[str]]:
    paths = [p for p in guest.glob(NM_DIR) if guest.is_file(p)]
    ifaces: list[NetworkInterface] = []
    files: list[str] = []
    for path in paths:
        try:
            ini = _ini(guest.read_text(path))
        except configparser.Error:
            continue
        if ini.get("connection", "type", fallback="") not in ("ethernet", "802-3-ethernet"):
            continue
        method = ini.get("ipv4", "method", fallback="auto")
        addrs = (
            [v.split(",")[0] for k, v in ini.items("ipv4") if re.fullmatch(r"address\d*", k)]
            if ini.has_section("ipv4")
            else []
        )
        gateway = ini.get("ipv4", "gateway", fallback=None)
        for k, v in ini.items("ipv4") if ini.has_section("ipv4") else []:
            if re.fullmatch(r"address\d*", k) and "," in v and not gateway:
                gateway = v.split(",")[1]
        mac = ini.get("ethernet", "mac-address", fallback=None)
        name = ini.get("connection", "interface-name", fallback=None) or ini.get(
            "connection", "id", fallback=""
        )
        ifaces.append(
            NetworkInterface(
                name=name,
                style="networkmanager",
                mode="dhcp" if method == "auto" else "static" if method == "manual" else "other",
                addresses=addrs,
                gateway=gateway,
                mac_address=mac.lower() if mac else None,
                source=path,
            )
        )
        files.append(path)
    return bool(paths), ifaces, files


def parse_shell_vars(text: str) -> dict[str, str]:
    """``KEY=value`` / ``KEY='value'`` / ``KEY="value"`` lines of a sysconfig file."""
    values: dict[str, str] = {}
    for raw in text.splitlines():
        line = raw.strip()
        m = re.match(r"^([A-Za-z_][A-Za-z0-9_]*)=(.*)$", line)
        if not m:
            continue
        value = m.group(2).strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        values[m.group(1)] = value
    return values


def _read_sysconfig(
    guest: Guest, directory: str, style: str
) -> tuple[bool, list[NetworkInterface], list[str]]:
    paths = [p for p in guest.glob(directory, prefix="ifcfg-") if guest.is_file(p)]
    ifaces: list[NetworkInterface] = []
    files: list[str] = []
    for path in paths:
        values = parse_shell_vars(guest.read_text(path))
        name = values.get("DEVICE") or posixpath.basename(path)[len("ifcfg-") :]
        proto = values.get("BOOTPROTO", "").lower()
        addrs = []
        if values.get("IPADDR"):
            addr = values["IPADDR"]
            if "/" not in addr:
                if values.get("PREFIX"):
                    addr += f"/{values['PREFIX']}"
                elif values.get("NETMASK"):
                    addr += f"/{_mask_to_prefix(values['NETMASK'])}"
            addrs.append(addr)
        mode = (
            "dhcp"
            if proto.startswith("dhcp")
            else "static"
            if proto in ("static", "none", "") and addrs
            else "other"
        )
        mac = values.get("HWADDR") or values.get("MACADDR") or values.get("LLADDR")
        ifaces.append(
            NetworkInterface(
                name=name,
                style=style,
                mode=mode,
                addresses=addrs,
                gateway=values.get("GATEWAY"),
                mac_address=mac.lower() if mac else None,
                source=path,
            )
        )
        if name != "lo":
            files.append(path)
            # Routes of the old interface name (RHEL route-<if>, SUSE ifroute-<if>) go with it.
            for route in (f"{directory}/route-{name}", f"{directory}/ifroute-{name}"):
                if guest.is_file(route):
                    files.append(route)
    if style == "wicked" and guest.is_file(f"{directory}/routes"):
        files.append(f"{directory}/routes")
        for line in guest.read_text(f"{directory}/routes").splitlines():
            words = line.split()
            if len(words) >= 2 and words[0] == "default":
                for iface in ifaces:
                    if iface.mode == "static" and not iface.gateway:
                        iface.gateway = words[1]
    return bool(paths), ifaces, files


def _read_ifcfg(guest: Guest) -> tuple[bool, list[NetworkInterface], list[str]]:
    return _read_sysconfig(guest, IFCFG_DIR, "ifcfg")


def _read_wicked(guest: Guest) -> tuple[bool, list[NetworkInterface], list[str]]:
    # /etc/sysconfig/network is a *file* on RHEL and a directory on SUSE.
    if not guest.is_dir(WICKED_DIR):
        return False, [], []
    return _read_sysconfig(guest, WICKED_DIR, "wicked")


def _read_networkd(guest: Guest) -> tuple[bool, list[NetworkInterface], list[str]]:
    paths = guest.glob(NETWORKD_DIR, suffix=".network")
    ifaces: list[NetworkInterface] = []
    files: list[str] = []
    for path in paths:
        try:
            ini = _ini(guest.read_text(path))
        except configparser.Error:
            continue
        name = ini.get("Match", "Name", fallback="")
        mac = ini.get("Match", "MACAddress", fallback=None)
        addrs = [a for a in ini.get("Network", "Address", fallback="").split() if a]
        dhcp = ini.get("Network", "DHCP", fallback="no").lower() in ("yes", "ipv4", "true", "both")
        ifaces.append(
            NetworkInterface(
                name=name or (mac or "?"),
                style="systemd-networkd",
                mode="dhcp" if dhcp else "static" if addrs else "other",
                addresses=addrs,
                gateway=ini.get("Network", "Gateway", fallback=None),
                mac_address=mac.lower() if mac else None,
                source=path,
            )
        )
        files.append(path)
    return bool(paths), ifaces, files


def _read_pins(guest: Guest, state: NetworkState) -> list[str]:
    pins = [p for p in UDEV_NET_RULES if guest.is_file(p)]
    for path in guest.glob(NETWORKD_DIR, suffix=".link"):
        try:
            ini = _ini(guest.read_text(path))
        except configparser.Error:
            continue
        mac = ini.get("Match", "MACAddress", fallback=None)
        name = ini.get("Link", "Name", fallback=None)
        if mac and name:
            pins.append(path)
            for iface in state.interfaces:
                if iface.name == name and not iface.mac_address:
                    iface.mac_address = mac.lower()
    return pins


def _mask_to_prefix(mask: str) -> int:
    try:
        return sum(bin(int(octet)).count("1") for octet in mask.split("."))
    except ValueError:
        return 24


# -- writers -------------------------------------------------------------------------------------
@dataclass
class NewInterface:
    """An interface as Sterna configures it on the target."""

    name: str
    dhcp: bool = True
    addresses: list[str] = field(default_factory=list)
    gateway: str | None = None
    dns: list[str] = field(default_factory=list)
    #: set where the platform's network wants less than 1500 (GCE: 1460)
    mtu: int | None = None


def render(style: str, nics: list[NewInterface]) -> dict[str, tuple[str, int]]:
    """Files (path → (content, mode)) configuring ``nics`` in ``style``."""
    header = "# Written by Sterna OS morphing: interfaces of the migrated instance.\n"
    files: dict[str, tuple[str, int]] = {}
    if style == "ifupdown":
        body = [header, f"source {IFUPDOWN_DIR}/*\n\n", "auto lo\niface lo inet loopback\n"]
        for nic in nics:
            body.append(f"\nallow-hotplug {nic.name}\n")
            if nic.dhcp:
                body.append(f"iface {nic.name} inet dhcp\n")
            else:
                body.append(f"iface {nic.name} inet static\n")
                body.extend(f"    address {a}\n" for a in nic.addresses)
                if nic.gateway:
                    body.append(f"    gateway {nic.gateway}\n")
            if nic.mtu:
                body.append(f"    mtu {nic.mtu}\n")
        files[IFUPDOWN_MAIN] = ("".join(body), 0o644)
    elif style == "netplan":
        ethernets: dict[str, dict[str, object]] = {}
        for nic in nics:
            conf: dict[str, object] = {"dhcp4": True} if nic.dhcp else {"addresses": list(nic.addresses)}
            if not nic.dhcp and nic.gateway:
                conf["routes"] = [{"to": "default", "via": nic.gateway}]
            if nic.mtu:
                conf["mtu"] = nic.mtu
            ethernets[nic.name] = conf
        doc = {"network": {"version": 2, "ethernets": ethernets}}
        files[f"{NETPLAN_DIR}/50-sterna.yaml"] = (header + yaml.safe_dump(doc, sort_keys=False), 0o600)
    elif style == "networkmanager":
        for nic in nics:
            lines = [
                header.strip(),
                "[connection]",
                f"id=sterna-{nic.name}",
                "type=ethernet",
                f"interface-name={nic.name}",
                "autoconnect=true",
                "",
                *(["[ethernet]", f"mtu={nic.mtu}", ""] if nic.mtu else []),
                "[ipv4]",
            ]
            if nic.dhcp:
                lines.append("method=auto")
            else:
                lines.append("method=manual")
                for i, addr in enumerate(nic.addresses, start=1):
                    lines.append(f"address{i}={addr}" + (f",{nic.gateway}" if i == 1 and nic.gateway else ""))
            lines += ["", "[ipv6]", "method=auto", ""]
            files[f"{NM_DIR}/sterna-{nic.name}.nmconnection"] = ("\n".join(lines), 0o600)
    elif style in ("ifcfg", "wicked"):
        directory = IFCFG_DIR if style == "ifcfg" else WICKED_DIR
        for nic in nics:
            if style == "ifcfg":
                lines = [header.strip(), f"DEVICE={nic.name}", "TYPE=Ethernet", "ONBOOT=yes"]
                if nic.dhcp:
                    lines.append("BOOTPROTO=dhcp")
                else:
                    addr, _, prefix = nic.addresses[0].partition("/") if nic.addresses else ("", "", "")
                    lines += ["BOOTPROTO=none", f"IPADDR={addr}", f"PREFIX={prefix or 24}"]
                    if nic.gateway:
                        lines.append(f"GATEWAY={nic.gateway}")
                lines.append("NM_CONTROLLED=yes")
                if nic.mtu:
                    lines.append(f"MTU={nic.mtu}")
            else:
                lines = [header.strip(), "STARTMODE='auto'"]
                if nic.dhcp:
                    lines.append("BOOTPROTO='dhcp'")
                else:
                    lines += ["BOOTPROTO='static'", f"IPADDR='{nic.addresses[0] if nic.addresses else ''}'"]
                if nic.mtu:
                    lines.append(f"MTU='{nic.mtu}'")
            files[f"{directory}/ifcfg-{nic.name}"] = ("\n".join(lines) + "\n", 0o644)
            if style == "wicked" and not nic.dhcp and nic.gateway:
                files[f"{WICKED_DIR}/ifroute-{nic.name}"] = (f"default {nic.gateway} - {nic.name}\n", 0o644)
    elif style == "systemd-networkd":
        for nic in nics:
            lines = [header.strip(), "[Match]", f"Name={nic.name}", ""]
            if nic.mtu:
                lines += ["[Link]", f"MTUBytes={nic.mtu}", ""]
            lines.append("[Network]")
            if nic.dhcp:
                lines.append("DHCP=ipv4")
            else:
                lines += [f"Address={a}" for a in nic.addresses]
                if nic.gateway:
                    lines.append(f"Gateway={nic.gateway}")
            files[f"{NETWORKD_DIR}/50-sterna-{nic.name}.network"] = ("\n".join(lines) + "\n", 0o644)
    else:
        raise ValueError(f"unknown network configuration style {style!r}")
    return files
