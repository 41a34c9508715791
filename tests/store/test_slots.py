"""The per-source-host semaphore in the record DB, on SQLite and PostgreSQL (issue 18)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from store.db import Database
from store.slots import SourceHostSlots
from tests.peers import postgres_database


@pytest.fixture(params=["sqlite", "postgresql"])
def slots(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[SourceHostSlots]:
    if request.param == "sqlite":
        db = Database(f"sqlite:///{tmp_path / 'sterna.db'}")
        db.upgrade()
        yield SourceHostSlots(db)
        db.dispose()
        return
    with postgres_database() as url:
        db = Database(url)
        db.upgrade()
        yield SourceHostSlots(db)
        db.dispose()


def test_at_most_limit_holders_per_source_host(slots: SourceHostSlots) -> None:
    assert slots.acquire("esx-1", 2, "a", 60) == 0
    assert slots.acquire("esx-1", 2, "b", 60) == 1
    assert slots.acquire("esx-1", 2, "c", 60) is None
    assert slots.acquire("esx-2", 2, "c", 60) == 0, "another host has its own slots"
    assert slots.held("esx-1") == 2
    slots.release("esx-1", 0, "someone-else")
    assert slots.acquire("esx-1", 2, "c", 60) is None, "only the holder releases its slot"
    slots.release("esx-1", 0, "a")
    assert slots.acquire("esx-1", 2, "c", 60) == 0


def test_a_dead_holders_slot_is_taken_over_once_expired(slots: SourceHostSlots) -> None:
    assert slots.acquire("esx-1", 1, "dead", -1) == 0  # already expired: its holder stopped renewing
    assert slots.acquire("esx-1", 1, "alive", 60) == 0
    assert not slots.renew("esx-1", 0, "dead", 60), "the dead holder lost it"
    assert slots.renew("esx-1", 0, "alive", 60)


def test_concurrent_acquirers_never_exceed_the_limit(slots: SourceHostSlots) -> None:
    won: list[int] = []
    lock = threading.Lock()

    def take(i: int) -> None:
        slot = slots.acquire("esx-1", 3, f"h{i}", 60)
        if slot is not None:
            with lock:
                won.append(slot)

    threads = [threading.Thread(target=take, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(won) == [0, 1, 2]
