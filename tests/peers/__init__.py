"""Real peers for the tests: free loopback ports, the Temporal dev server, PostgreSQL databases."""

from __future__ import annotations

import fcntl
import socket
import subprocess
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg

PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"


@contextmanager
def cache_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``path`` (created if missing) across processes.

    ``make test`` runs pytest-xdist workers, which are processes: a cache one of them fills (a venv, a
    built binary) the others must wait for, not fill a second time beside it. A thread lock can't
    see the other workers; ``flock`` can, and the kernel drops it if the holder dies.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def provider_plugins(folder: Path, dist: str, providers: dict[str, str]) -> Path:
    """``folder``, to put on a process's ``PYTHONPATH``: a dist-info named ``dist`` whose entry points
    register ``providers`` (platform: ``module:Class``) in the ``sterna.providers`` group."""
    info = folder / f"{dist}-0.dist-info"
    info.mkdir(parents=True, exist_ok=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist.replace('_', '-')}\nVersion: 0\n")
    entries = "".join(f"{platform} = {target}\n" for platform, target in providers.items())
    (info / "entry_points.txt").write_text(f"[sterna.providers]\n{entries}")
    return folder


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def postgres_database() -> Iterator[str]:
    """A fresh database on the machine's PostgreSQL (trust auth), dropped afterwards."""
    name = f"sterna_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
    finally:
        with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def temporal_cli(address: str, *args: str) -> str:
    from devstack.launcher import temporal_binary

    out = subprocess.run([temporal_binary(), *args, "--address", address], capture_output=True, text=True,
                         check=True, timeout=60)
    return out.stdout
