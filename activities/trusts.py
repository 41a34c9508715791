"""Releasing a migration's Keystone trust when its workflow ends (success, error or cancel)."""

from __future__ import annotations

import asyncio

from temporalio import activity

from activities import names
from activities.services import Services
from workflows.types import TrustRelease


class TrustActivities:
    def __init__(self, services: Services) -> None:
        self.services = services

    @activity.defn(name=names.RELEASE_MIGRATION_TRUST)
    async def release(self, inp: TrustRelease) -> None:
        store = self.services.store
        trust_id = await asyncio.to_thread(store.migration_trust, inp.migration_id)
        keystone = self.services.keystone
        if not trust_id or keystone is None:
            return
        existed = await asyncio.to_thread(keystone.delete_trust, trust_id)
        await asyncio.to_thread(store.clear_migration_trust, inp.migration_id)
        activity.logger.info("migration %s: Keystone trust %s", inp.migration_id,
                             "deleted" if existed else "was already gone")
