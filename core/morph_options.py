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


def skip_network(env: Mapping[str, Any], where: str = "destination_environment") -> bool:
    """``destination_environment.skip_os_morphing_network``: absent or null is false.

    Raises ``InvalidInput`` (never retried) for anything but a JSON boolean: ``"false"`` or ``0`` would
    otherwise read as one value to the client and another to Python.
    """
    value = env.get(SKIP_NETWORK)
    if value is None:
        return False
    if not isinstance(value, bool):
        raise InvalidInput(f"{where}.{SKIP_NETWORK} must be true or false (a JSON boolean); got {value!r}")
    return value
