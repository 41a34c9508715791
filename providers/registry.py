"""Platform name -> provider class, imported lazily from the ``sterna.providers`` entry points.

Built-in providers register through the same entry-point group as third-party ones, so the
registry knows every platform without importing any provider SDK until one is used.
"""

from __future__ import annotations

from functools import cache
from importlib.metadata import EntryPoint, entry_points
from typing import Any, TypeVar

from core.errors import InvalidInput
from providers.base import BaseProvider

GROUP = "sterna.providers"
P = TypeVar("P", bound=BaseProvider)

# Fallback for running from a source tree that was never pip-installed.
_BUILTIN = {"local": "providers.local.provider:LocalProvider", "gcp": "providers.gcp.provider:GcpProvider"}


@cache
def _entry_points() -> dict[str, EntryPoint]:
    found = {name: EntryPoint(name, value, GROUP) for name, value in _BUILTIN.items()}
    for ep in entry_points(group=GROUP):
        found[ep.name] = ep
    return found


def platforms() -> list[str]:
    return sorted(_entry_points())


@cache
def provider_class(platform: str) -> type[BaseProvider]:
    ep = _entry_points().get(platform)
    if ep is None:
        raise InvalidInput(f"Unknown provider type '{platform}'. Known types: {', '.join(platforms())}")
    cls = ep.load()
    if not (isinstance(cls, type) and issubclass(cls, BaseProvider)):
        raise TypeError(f"entry point {ep.value} is not a provider class")
    return cls


def get_provider(platform: str, connection_info: dict[str, Any], capability: type[P]) -> P:
    """Instantiate the provider for ``platform``, checking it has ``capability``."""
    cls = provider_class(platform)
    if not issubclass(cls, capability):
        raise InvalidInput(f"Provider '{platform}' can't act as {capability.__name__.removesuffix('Provider')}")
    return cls(connection_info)
