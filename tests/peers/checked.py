"""A test-only ``checked-local`` provider: the local provider with a create-time destination check.

Azure is the one provider whose destination checks its environment when an action is created
(``ImportProvider.CHECKS_AT_CREATE``: credentials, VM size, subnets). This provider runs the transfer
routes' use of that check on a local destination, with no cloud peer to start: its check refuses
an unknown flavor (the local provider's VM size) as Azure refuses an unknown VM size, and refuses a
secret that reaches it still a reference (the worker resolves stored secrets before a provider sees
them). Only the processes of ``tests.helpers.own_api_and_worker`` get it
(``plugin_path``): on the shared stack it would be one more platform in ``GET /providers``.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from core.errors import InvalidInput
from core.secrets import is_reference
from providers.local.domain import FLAVORS
from providers.local.provider import LocalProvider
from tests.peers import provider_plugins

PLATFORM = "checked-local"


def plugin_path(root: Path) -> Path:
    """A folder to put on a process's ``PYTHONPATH``: its dist-info registers this provider."""
    return provider_plugins(root / "checked-plugin", "sterna_test_checked",
                            {PLATFORM: f"{__name__}:CheckedLocalProvider"})


class CheckedLocalProvider(LocalProvider):
    PLUGIN_NAME = PLATFORM
    CHECKS_AT_CREATE = True

    def check_destination_environment(self, env: Mapping[str, Any], network_map: Mapping[str, Any]) -> None:
        flavor = env.get("flavor_name")
        if flavor is not None and flavor not in FLAVORS:
            raise InvalidInput(f"Flavor '{flavor}' is not offered here. Known: {', '.join(sorted(FLAVORS))}")
        unresolved = [key for key, value in env.items() if is_reference(value)]
        if unresolved:
            raise InvalidInput(f"Secret(s) not resolved before the check: {', '.join(unresolved)}")
