"""Environments in requests: which keys the providers mark secret, and what clients may not send."""

from __future__ import annotations

from typing import Any

from core.secrets import refuse_references, schema_secret_keys
from providers.base import ExportProvider, ImportProvider
from providers.registry import provider_class


def marked(origin_type: str, destination_type: str) -> dict[str, set[str]]:
    """Per environment column, the key names that the two providers' schemas mark secret."""
    src, dst = provider_class(origin_type), provider_class(destination_type)
    return {
        "source_environment": schema_secret_keys(src.source_environment_schema())
        if issubclass(src, ExportProvider) else set(),
        "destination_environment": schema_secret_keys(dst.destination_environment_schema())
        if issubclass(dst, ImportProvider) else set(),
    }


def check(**environments: dict[str, Any] | None) -> None:
    """A 400 (``InvalidInput``) when a client sends Sterna's own secret references: only the store makes them."""
    for name, env in environments.items():
        refuse_references(env or {}, name)
