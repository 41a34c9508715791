"""Per-process services that activities share: settings, record store, provider resolution."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any, TypeVar

from core.crypto import SecretBox
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

    @classmethod
    def create(cls, settings: Settings) -> Services:
        return cls(settings=settings, store=Store(Database(settings.db_url), SecretBox(settings)))

    async def provider(self, endpoint_id: str, capability: type[P]) -> P:
        """Resolve credentials at the moment they are needed: they never enter workflow history."""
        endpoint = await asyncio.to_thread(self.store.get_endpoint, None, endpoint_id)
        info: dict[str, Any] = await asyncio.to_thread(self.store.connection_info, endpoint_id)
        return await asyncio.to_thread(get_provider, endpoint.type, info, capability)
