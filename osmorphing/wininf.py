"""Reading Windows driver INF files: the sections, the service a driver installs, the devices it binds.

Only what offline injection needs: ``[Version] ClassGuid``, the hardware ids listed in the models
sections named by ``[Manufacturer]``, and the ``AddService`` directive with its service-install section
(``ServiceType``, ``StartType``, ``ServiceBinary``, ``LoadOrderGroup``). ``%strkey%`` tokens are resolved
from ``[Strings]``; ``%12%`` (the drivers directory) is kept as Windows spells it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

_SECTION = re.compile(r"^\[([^\]]+)\]\s*$")
_HWID = re.compile(r"^(?:PCI|ACPI|VMBUS|ROOT)\\[^\s,;]+$", re.IGNORECASE)


@dataclass
class InfService:
    name: str
    binary: str  # file name of the .sys
    service_type: int = 1
    start_type: int = 3
    error_control: int = 1
    load_order_group: str = ""


@dataclass
class InfDriver:
    class_guid: str = ""
    hardware_ids: list[str] = field(default_factory=list)
    services: list[InfService] = field(default_factory=list)


def decode_inf(data: bytes) -> str:
    """INF files are UTF-16 (with a BOM) or an 8-bit code page."""
    if data[:2] in (b"\xff\xfe", b"\xfe\xff"):
        return data.decode("utf-16")
    return data.decode("utf-8-sig", errors="replace")


def _strip_comment(line: str) -> str:
    out, quoted = [], False
    for ch in line:
        if ch == '"':
            quoted = not quoted
        elif ch == ";" and not quoted:
            break
        out.append(ch)
    return "".join(out).strip()


def sections(text: str) -> dict[str, list[str]]:
    """Section name (lower case) -> its non-empty lines, comments removed, continuations joined."""
    result: dict[str, list[str]] = {}
    current: list[str] | None = None
    pending = ""
    for raw in text.splitlines():
        line = _strip_comment(raw)
        if line.endswith("\\"):
            pending += line[:-1]
            continue
        line, pending = pending + line, ""
        match = _SECTION.match(line)
        if match:
            current = result.setdefault(match.group(1).strip().lower(), [])
        elif line and current is not None:
            current.append(line)
    return result


def _pairs(lines: list[str]) -> list[tuple[str, str]]:
    return [(k.strip(), v.strip()) for k, sep, v in (line.partition("=") for line in lines) if sep]


def _unquote(value: str, strings: dict[str, str]) -> str:
    value = value.strip().strip('"')
    return re.sub(r"%([^%]+)%", lambda m: strings.get(m.group(1).lower(), m.group(0)), value)


def _int(value: str, default: int) -> int:
    try:
        return int(value.strip(), 0)
    except ValueError:
        return default


def parse_inf(text: str) -> InfDriver:
    secs = sections(text)
    strings = {k.lower(): _unquote(v, {}) for k, v in _pairs(secs.get("strings", []))}
    version = {k.lower(): v for k, v in _pairs(secs.get("version", []))}
    driver = InfDriver(class_guid=_unquote(version.get("classguid", ""), strings).upper())
    # [Manufacturer]: %Mfg% = ModelsSection[, decoration, decoration...]
    for _mfg, value in _pairs(secs.get("manufacturer", [])):
        base, *decorations = [p.strip() for p in value.split(",")]
        for name in [base] + [f"{base}.{d}" for d in decorations if d]:
            for _desc, install in _pairs(secs.get(name.lower(), [])):
                for raw in install.split(",")[1:]:
                    token = raw.strip()
                    if _HWID.match(token) and token.upper() not in driver.hardware_ids:
                        driver.hardware_ids.append(token.upper())
    seen: set[str] = set()
    for name, lines in secs.items():
        if not name.endswith(".services"):
            continue
        for key, value in _pairs(lines):
            if key.lower() != "addservice":
                continue
            parts = [p.strip() for p in value.split(",")]
            if len(parts) < 3 or not parts[0] or parts[0].lower() in seen:
                continue
            seen.add(parts[0].lower())
            inst = {k.lower(): _unquote(v, strings) for k, v in _pairs(secs.get(parts[2].lower(), []))}
            binary = inst.get("servicebinary", f"{parts[0]}.sys").replace("/", "\\").split("\\")[-1]
            driver.services.append(InfService(
                name=_unquote(parts[0], strings),
                binary=binary,
                service_type=_int(inst.get("servicetype", "1"), 1),
                start_type=_int(inst.get("starttype", "3"), 3),
                error_control=_int(inst.get("errorcontrol", "1"), 1),
                load_order_group=inst.get("loadordergroup", ""),
            ))
    return driver
