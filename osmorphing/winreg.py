"""Editing a Windows registry hive inside the guest with hivex, each value set becoming a change event.

The hive is copied out of the guest, edited with hivex (python3-hivex, the library libguestfs and
virt-v2v use) and written back once, by ``commit``. hivex does not replay a hive's transaction logs
(``SYSTEM.LOG1``/``.LOG2``): a guest that was not shut down cleanly may hold newer data there, as with
virt-v2v.
"""

from __future__ import annotations

import os
import struct
import tempfile
from pathlib import Path
from typing import Any

from osmorphing.editor import GuestEditor
from osmorphing.system import import_system

REG_SZ, REG_EXPAND_SZ, REG_BINARY, REG_DWORD, REG_MULTI_SZ, REG_QWORD = 1, 2, 3, 4, 7, 11
_TYPE_NAMES = {REG_SZ: "REG_SZ", REG_EXPAND_SZ: "REG_EXPAND_SZ", REG_BINARY: "REG_BINARY",
               REG_DWORD: "REG_DWORD", REG_MULTI_SZ: "REG_MULTI_SZ", REG_QWORD: "REG_QWORD"}
Value = str | int | list[str] | bytes


def encode(kind: int, value: Value) -> bytes:
    if kind in (REG_SZ, REG_EXPAND_SZ):
        assert isinstance(value, str)
        return (value + "\0").encode("utf-16-le")
    if kind == REG_MULTI_SZ:
        assert isinstance(value, list)
        return "".join(v + "\0" for v in value).encode("utf-16-le") + b"\0\0"
    if kind == REG_DWORD:
        assert isinstance(value, int)
        return struct.pack("<I", value)
    if kind == REG_QWORD:
        assert isinstance(value, int)
        return struct.pack("<Q", value)
    assert isinstance(value, bytes)
    return value


def decode(kind: int, raw: bytes) -> Value:
    if kind in (REG_SZ, REG_EXPAND_SZ):
        return raw.decode("utf-16-le", errors="replace").split("\0")[0]
    if kind == REG_MULTI_SZ:
        return [s for s in raw.decode("utf-16-le", errors="replace").split("\0") if s]
    if kind == REG_DWORD and len(raw) >= 4:
        return int(struct.unpack("<I", raw[:4])[0])
    if kind == REG_QWORD and len(raw) >= 8:
        return int(struct.unpack("<Q", raw[:8])[0])
    return raw


def _kind_of(value: Value) -> int:
    if isinstance(value, bool | int):
        return REG_DWORD
    if isinstance(value, list):
        return REG_MULTI_SZ
    if isinstance(value, bytes):
        return REG_BINARY
    return REG_SZ


class Hive:
    """One hive of the guest (``/Windows/System32/config/SYSTEM``), opened for writing."""

    def __init__(self, editor: GuestEditor, guest_path: str, display: str) -> None:
        hivex = import_system("hivex", "python3-hivex")
        self.editor = editor
        self.guest_path = guest_path
        self.display = display  # HKLM\SYSTEM, for the events
        fd, name = tempfile.mkstemp(prefix="sterna-hive-")
        with os.fdopen(fd, "wb") as tmp:
            tmp.write(editor.guest.read_bytes(guest_path))
        self._path = Path(name)
        self.h: Any = hivex.Hivex(name, write=True)
        self.dirty = False

    def node(self, key: str, create: bool = False) -> int | None:
        node = self.h.root()
        for part in [p for p in key.split("\\") if p]:
            child = self.h.node_get_child(node, part)
            if not child:
                if not create:
                    return None
                child = self.h.node_add_child(node, part)
                self.dirty = True
            node = child
        return int(node)

    def subkeys(self, key: str) -> list[str]:
        node = self.node(key)
        return [str(self.h.node_name(c)) for c in self.h.node_children(node)] if node else []

    def get(self, key: str, name: str) -> Value | None:
        node = self.node(key)
        if not node:
            return None
        value = self.h.node_get_value(node, name)
        if not value:
            return None
        kind, raw = self.h.value_value(value)
        return decode(kind, raw)

    def values(self, key: str) -> dict[str, Value]:
        node = self.node(key)
        if not node:
            return {}
        out = {}
        for value in self.h.node_values(node):
            kind, raw = self.h.value_value(value)
            out[str(self.h.value_key(value))] = decode(kind, raw)
        return out

    def set(self, key: str, values: dict[str, Value], why: str, kinds: dict[str, int] | None = None) -> bool:
        """Set ``values`` under ``key`` (created as needed); one change event when anything differs."""
        kinds = kinds or {}
        existing = self.values(key)
        changed = {n: v for n, v in values.items() if existing.get(n) != v}
        if not changed:
            return False
        node = self.node(key, create=True)
        for name, value in changed.items():
            kind = kinds.get(name, _kind_of(value))
            self.h.node_set_value(node, {"key": name, "t": kind, "value": encode(kind, value)})
        self.dirty = True
        shown = ", ".join(f"{n}={v!r} ({_TYPE_NAMES[kinds.get(n, _kind_of(v))]})" for n, v in changed.items())
        self.editor.record(f"{self.display}\\{key}", "modified" if existing else "created", f"{shown}: {why}")
        return True

    def delete_key(self, key: str, why: str) -> bool:
        node = self.node(key)
        if not node:
            return False
        self.h.node_delete_child(node)
        self.dirty = True
        self.editor.record(f"{self.display}\\{key}", "deleted", why)
        return True

    def commit(self) -> None:
        """Write the hive back into the guest (once, after every edit) and drop the local copy."""
        try:
            if self.dirty:
                self.h.commit(str(self._path))
                self.editor.guest.write_bytes(self.guest_path, self._path.read_bytes())
        finally:
            self._path.unlink(missing_ok=True)

    def discard(self) -> None:
        self._path.unlink(missing_ok=True)
