"""Make real Windows registry hive files for synthetic Windows trees.

Debian ships no blank hive, so ``empty_hive`` writes the smallest valid ``regf`` file (a header block and
one ``hbin`` page holding a root key and its security cell) from the published format; ``make_hive``
then adds keys and values to it with hivex (python3-hivex), the same library libguestfs reads them with.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping
from pathlib import Path

from osmorphing.system import import_system

hivex = import_system("hivex", "python3-hivex")

REG_SZ = 1
REG_DWORD = 4
REG_MULTI_SZ = 7


def _cell(payload: bytes) -> bytes:
    size = (len(payload) + 4 + 7) & ~7
    return struct.pack("<i", -size) + payload + b"\0" * (size - 4 - len(payload))


def empty_hive(root_name: str = "ROOT") -> bytes:
    """A valid, empty hive: a root key (``nk``) and one security descriptor cell (``sk``)."""
    root_off = 0x20  # offsets are relative to the first hbin page
    name = root_name.encode("ascii")
    nk_len = (76 + len(name) + 4 + 7) & ~7
    sk_off = root_off + nk_len
    # A self-relative security descriptor with no owner, group or ACLs (20 bytes).
    descriptor = struct.pack("<BBHIIII", 1, 0, 0x8004, 0, 0, 0, 0)
    sk = b"sk" + b"\0\0" + struct.pack("<IIII", sk_off, sk_off, 1, len(descriptor)) + descriptor
    nk = (
        b"nk"
        + struct.pack("<H", 0x2C)  # KEY_HIVE_ENTRY | KEY_NO_DELETE | KEY_COMP_NAME
        + struct.pack("<Q", 0)  # last written
        + struct.pack("<I", 0)
        + struct.pack("<I", 0xFFFFFFFF)  # parent (none)
        + struct.pack("<II", 0, 0)  # subkeys, volatile subkeys
        + struct.pack("<II", 0xFFFFFFFF, 0xFFFFFFFF)  # subkey lists
        + struct.pack("<I", 0)  # values
        + struct.pack("<I", 0xFFFFFFFF)  # value list
        + struct.pack("<I", sk_off)
        + struct.pack("<I", 0xFFFFFFFF)  # class name
        + struct.pack("<IIIII", 0, 0, 0, 0, 0)
        + struct.pack("<HH", len(name), 0)
        + name
    )
    cells = _cell(nk) + _cell(sk)
    page_size = 0x1000
    free = page_size - 0x20 - len(cells)
    hbin = (
        b"hbin" + struct.pack("<II", 0, page_size) + b"\0" * 8 + struct.pack("<Q", 0) + struct.pack("<I", 0)
    )
    page = hbin + cells + struct.pack("<i", free) + b"\0" * (free - 4)
    header = bytearray(0x1000)
    header[0:4] = b"regf"
    struct.pack_into("<IIQIIIIIII", header, 4, 1, 1, 0, 1, 3, 0, 1, root_off, page_size, 1)
    checksum = 0
    for (word,) in struct.iter_unpack("<I", bytes(header[:0x1FC])):
        checksum ^= word
    struct.pack_into("<I", header, 0x1FC, checksum)
    return bytes(header) + page


def make_hive(path: Path, keys: Mapping[str, Mapping[str, str | int | list[str]]]) -> Path:
    """Write a hive at ``path`` holding ``keys``: ``"A\\B\\C"`` → {name: str (REG_SZ) | int (REG_DWORD)
    | list (REG_MULTI_SZ)}."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(empty_hive())
    h = hivex.Hivex(str(path), write=True)
    for key, values in keys.items():
        node = h.root()
        for part in key.split("\\"):
            child = h.node_get_child(node, part)
            node = child if child else h.node_add_child(node, part)
        encoded = []
        for name, value in values.items():
            if isinstance(value, int):
                encoded.append({"key": name, "t": REG_DWORD, "value": struct.pack("<I", value)})
            elif isinstance(value, list):
                raw = "".join(v + "\0" for v in value).encode("utf-16-le") + b"\0\0"
                encoded.append({"key": name, "t": REG_MULTI_SZ, "value": raw})
            else:
                encoded.append({"key": name, "t": REG_SZ, "value": (value + "\0").encode("utf-16-le")})
        h.node_set_values(node, encoded)
    h.commit(str(path))
    return path
