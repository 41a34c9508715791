"""The per-source-host transfer limit, seen from an export: wait for a slot, hold it, give it back.

While it waits, the export's task heartbeats (``task_running``: a cancel reaches it, Temporal does
not take it for dead) with the details of its previous attempt, which keep its checkpoint.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress

from temporalio import activity

from activities.services import Services
from activities.task_recorder import TaskRecorder
from core.models import SourceSnapshot
from providers.base import ExportProvider
from store.slots import SourceHostSlots

#: seconds between two tries for a slot
POLL = 1.0


@asynccontextmanager
async def source_slot(services: Services, source: ExportProvider, snapshot: SourceSnapshot,
                      rec: TaskRecorder) -> AsyncIterator[None]:
    limit = services.settings.max_transfers_per_source_host
    host = await asyncio.to_thread(source.source_host, snapshot) if limit > 0 else None
    if host is None:
        yield
        return
    slots = SourceHostSlots(services.store.db)
    info = activity.info()
    holder = f"{services.settings.worker_host_id}/{info.workflow_id}/{info.activity_id}/{info.attempt}"[:512]
    # A holder that died keeps its slot at most this long: a few missed heartbeats.
    ttl = max(3 * services.settings.heartbeat_timeout, 10.0)
    waited = False
    while (slot := await _take(slots, host, limit, holder, ttl)) is None:
        if not waited:
            waited = True
            await rec.aevent(f"Waiting for one of the {limit} transfer slots of source host {host}")
        await asyncio.sleep(POLL)
    if waited:
        await rec.aevent(f"Got transfer slot {slot + 1} of {limit} of source host {host}")

    async def renew() -> None:
        while True:
            await asyncio.sleep(ttl / 3)
            await asyncio.to_thread(slots.renew, host, slot, holder, ttl)

    renewer = asyncio.create_task(renew())
    try:
        yield
    finally:
        renewer.cancel()
        with suppress(asyncio.CancelledError):
            await renewer
        await asyncio.shield(asyncio.to_thread(slots.release, host, slot, holder))


async def _take(slots: SourceHostSlots, host: str, limit: int, holder: str, ttl: float) -> int | None:
    """One try for a slot. A cancel that lands while the DB call runs gives back what it got: the
    slot would stay taken until its lease ran out otherwise."""
    trying = asyncio.ensure_future(asyncio.to_thread(slots.acquire, host, limit, holder, ttl))
    try:
        return await asyncio.shield(trying)
    except asyncio.CancelledError:
        with suppress(Exception):
            got = await trying
            if got is not None:
                await asyncio.to_thread(slots.release, host, got, holder)
        raise
