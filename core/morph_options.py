"""OS morphing options a client sets in ``destination_environment``, read in one place.

The API calls these at create and update, so that a bad value is a 400 then rather than a failed
OS_MORPHING task minutes into a migration; the morph step reads the value through the same function.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from core.errors import InvalidInput

#: skip only the network part of OS morphing (interface configuration, MAC-pinned names, naming arguments)
SKIP_NETWORK = "skip_os_morphing_network"
#: keep each interface's static addresses on its new name instead of switching it to DHCP
KEEP_STATIC_IP = "keep_static_ip"


def skip_network(env: Mapping[str, Any], where: str = "destination_environment") -> bool:
    """``destination_environment.skip_os_morphing_network``: absent or null is false."""
    return _flag(env, SKIP_NETWORK, where)


def keep_static_ip(env: Mapping[str, Any], where: str = "destination_environment") -> bool:
    """``destination_environment.keep_static_ip``: absent or null is false."""
    return _flag(env, KEEP_STATIC_IP, where)


def check(env: Mapping[str, Any], where: str = "destination_environment") -> None:
    """Every morph option of ``env``, as the API checks them at create and update."""
    skip_network(env, where)
    keep_static_ip(env, where)


def _flag(env: Mapping[str, Any], key: str, where: str) -> bool:
    """A boolean option. Raises ``InvalidInput`` (never retried) for anything but a JSON boolean:
    ``"false"`` or ``0`` would otherwise read as one value to the client and another to Python."""
    value = env.get(key)
    if value is None:
        return False
    if not isinstance(value, bool):
        raise InvalidInput(f"{where}.{key} must be true or false (a JSON boolean); got {value!r}")
    return value
