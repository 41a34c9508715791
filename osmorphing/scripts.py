"""Coriolis ``user_scripts`` for OS morphing.

Format: ``{"global": {"linux"|"windows": <script> | [{"phase": ..., "payload": ...}]},
"instances": {"<instance>": <script> | [...]}}``. A bare string runs in the default phase,
``osmorphing_post_os_mount``. Global scripts for the guest's OS type run first, then the instance's own.
"""

from __future__ import annotations

from typing import Any

PRE_MOUNT = "osmorphing_pre_os_mount"
POST_MOUNT = "osmorphing_post_os_mount"
FIRST_BOOT = "replica_first_boot"
PHASES = (PRE_MOUNT, POST_MOUNT, FIRST_BOOT)


def _entries(value: Any, origin: str) -> list[tuple[str, str, str]]:
    if value is None:
        return []
    if isinstance(value, str):
        return [(POST_MOUNT, value, origin)]
    if isinstance(value, list):
        out = []
        for i, item in enumerate(value):
            if not isinstance(item, dict) or not isinstance(item.get("payload"), str):
                raise ValueError(f"user_scripts {origin}[{i}] must be {{'phase', 'payload'}}")
            phase = item.get("phase") or POST_MOUNT
            if phase not in PHASES:
                raise ValueError(
                    f"user_scripts {origin}[{i}]: unknown phase {phase!r}; expected one of {PHASES}"
                )
            out.append((phase, item["payload"], f"{origin}[{i}]"))
        return out
    raise ValueError(f"user_scripts {origin} must be a string or a list of {{'phase', 'payload'}}")


def scripts_for(
    user_scripts: dict[str, Any] | None, os_type: str, instance: str | None
) -> list[tuple[str, str, str]]:
    """``(phase, payload, origin)`` for this guest, global ones first."""
    if not user_scripts:
        return []
    found = _entries((user_scripts.get("global") or {}).get(os_type), f"global.{os_type}")
    if instance:
        found += _entries((user_scripts.get("instances") or {}).get(instance), f"instances.{instance}")
    return found


def for_phase(scripts: list[tuple[str, str, str]], phase: str) -> list[tuple[str, str]]:
    return [(payload, origin) for p, payload, origin in scripts if p == phase]
