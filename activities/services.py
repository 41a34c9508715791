"""Per-process services that activities share: settings, record store, provider resolution."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any, TypeVar

from activities import credentials
from activities.metrics import note_provider
from core.crypto import SecretBox
from core.keystone import KeystoneService
from core.settings import Settings
from providers.base import BaseProvider
from providers.registry import get_provider
from store.db import Database
from store.repo import Store

P = TypeVar("P", bound=BaseProvider)


@dataclass
class Services:
    settings: Settings
    store: Store
    _keystone: KeystoneService | None = field(default=None, repr=False)

    @classmethod
    def create(cls, settings: Settings) -> Services:
        return cls(settings=settings, store=Store(Database(settings.db_url), SecretBox(settings)))

    @property
    def keystone(self) -> KeystoneService | None:
        """The service user's Keystone client, when Keystone is configured."""
        if self._keystone is None and self.settings.keystone_auth_url and self.settings.keystone_password:
            self._keystone = KeystoneService(self.settings)
        return self._keystone

    def resolve(self, platform: str, info: dict[str, Any], trust_id: str | None = None,
                migration_id: str | None = None) -> dict[str, Any]:
        """Inline credentials as they are; Barbican references and same-cloud endpoints through
        ``trust_id``, or else ``migration_id``'s trust (``activities.credentials``). Blocking."""
        if not credentials.needs_keystone(platform, info):
            return info
        if trust_id is None and migration_id is not None:
            trust_id = self.store.migration_trust(migration_id)
        return credentials.resolve(platform, info, self.keystone, trust_id)

    async def provider(self, endpoint_id: str, capability: type[P], migration_id: str | None = None) -> P:
        """Resolve credentials at the moment they are needed: they never enter workflow history.

        ``migration_id`` is the migration the caller works for, whose trust reads Barbican secrets.
        """
        endpoint = await asyncio.to_thread(self.store.get_endpoint, None, endpoint_id)
        note_provider(endpoint.type)
        info: dict[str, Any] = await asyncio.to_thread(self.store.connection_info, endpoint_id)
        info = await asyncio.to_thread(self.resolve, endpoint.type, info, None, migration_id)
        return await asyncio.to_thread(get_provider, endpoint.type, info, capability)
