"""Limits on user input that both the API (at create time) and the activities (at use) enforce."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from core.errors import InvalidInput

#: Smallest accepted ``bandwidth_limit``, in bytes/s (1 MiB/s). Below it a disk transfer sends a
#: chunk so rarely that its attempt times out while holding one of the host's disk slots.
MIN_BANDWIDTH_LIMIT = 1024 * 1024


def bandwidth_limit(env: Mapping[str, Any], where: str = "environment") -> int | None:
    """The ``bandwidth_limit`` of a source or destination environment: None (unlimited) or bytes/s.

    Raises ``InvalidInput`` (never retried) for anything but an integer of at least
    ``MIN_BANDWIDTH_LIMIT``; ``true``, ``1.5`` and ``"8M"`` included.
    """
    value = env.get("bandwidth_limit")
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < MIN_BANDWIDTH_LIMIT:
        raise InvalidInput(f"{where}.bandwidth_limit must be an integer number of bytes per second, at least "
                           f"{MIN_BANDWIDTH_LIMIT} (1 MiB/s), or null for no limit; got {value!r}")
    return value


def replication_limit(source_env: Mapping[str, Any], destination_env: Mapping[str, Any]) -> int | None:
    """The pace of a replication: the stricter of the two environments' ``bandwidth_limit``.

    A one-shot migration reads at the source's limit and uploads at the destination's; a replication
    does both in one pass (source to replica disk), so either side's link can be the one to spare.
    """
    limits = [x for x in (bandwidth_limit(source_env, "source_environment"),
                          bandwidth_limit(destination_env, "destination_environment")) if x is not None]
    return min(limits) if limits else None
