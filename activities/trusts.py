"""Releasing a migration's Keystone trust when its workflow ends (success, error or cancel).

A transfer's trust is not released here: it lives as long as the transfer (``api.trusts``)."""

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
        # Also run by the forced cleanup of a transfer's execution or deployment: a transfer's own
        # trust outlives those (its next runs act through it), so only a migration's goes here.
        owner = await asyncio.to_thread(store.trust_owner, inp.migration_id)
        keystone = self.services.keystone
        if owner is None or not owner.trust_id or keystone is None:
            return
        existed = await asyncio.to_thread(keystone.delete_trust, owner.trust_id)
        forget = store.clear_migration_trust if owner.type == "migration" else store.clear_transfer_trust
        await asyncio.to_thread(forget, owner.id)
        activity.logger.info("migration %s: Keystone trust %s", owner.id,
                             "deleted" if existed else "was already gone")
