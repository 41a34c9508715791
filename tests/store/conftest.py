"""The record DB on both backends, upgraded to the newest schema."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from core.crypto import SecretBox
from core.settings import Settings
from store.db import Database
from store.repo import Store
from tests.peers import postgres_database


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    settings = Settings(data_dir=tmp_path, secret_key=None)
    if request.param == "sqlite":
        db = Database(f"sqlite:///{tmp_path / 'records.db'}")
        db.upgrade()
        yield Store(db, SecretBox(settings))
        db.dispose()
    else:
        with postgres_database() as url:
            db = Database(url)
            db.upgrade()
            yield Store(db, SecretBox(settings))
            db.dispose()
