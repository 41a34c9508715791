"""A counting semaphore per source host, in the record DB that every worker shares.

Workers on different hosts have no other shared state than the record DB (Temporal's task
queues limit concurrency per worker, not per source), so the slots live in it.
"""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import delete, update
from sqlalchemy.exc import IntegrityError

from store.db import Database
from store.models import SourceHostSlot, utcnow


class SourceHostSlots:
    def __init__(self, db: Database) -> None:
        self.db = db

    def acquire(self, source_host: str, limit: int, holder: str, ttl: float) -> int | None:
        """Take a free slot (0 .. limit-1) of ``source_host``; None when all are held and unexpired."""
        now = utcnow()
        with self.db.session() as s:
            s.execute(delete(SourceHostSlot).where(SourceHostSlot.source_host == source_host,
                                                   SourceHostSlot.expires_at < now))
        for slot in range(limit):
            try:
                with self.db.session() as s:
                    s.add(SourceHostSlot(source_host=source_host, slot=slot, holder=holder,
                                         expires_at=now + timedelta(seconds=ttl)))
                return slot
            except IntegrityError:
                continue
        return None

    def renew(self, source_host: str, slot: int, holder: str, ttl: float) -> bool:
        """Push the slot's expiry on; False when it was lost (expired and taken by another holder)."""
        with self.db.session() as s:
            done = s.execute(update(SourceHostSlot).where(
                SourceHostSlot.source_host == source_host, SourceHostSlot.slot == slot,
                SourceHostSlot.holder == holder).values(expires_at=utcnow() + timedelta(seconds=ttl)))
            return bool(getattr(done, "rowcount", 0))

    def release(self, source_host: str, slot: int, holder: str) -> None:
        with self.db.session() as s:
            s.execute(delete(SourceHostSlot).where(SourceHostSlot.source_host == source_host,
                                                   SourceHostSlot.slot == slot, SourceHostSlot.holder == holder))

    def held(self, source_host: str) -> int:
        from sqlalchemy import func, select

        with self.db.session() as s:
            return int(s.scalar(select(func.count()).select_from(SourceHostSlot).where(
                SourceHostSlot.source_host == source_host, SourceHostSlot.expires_at >= utcnow())) or 0)
