"""Real peers for the tests: free loopback ports, the Temporal dev server, PostgreSQL databases."""

from __future__ import annotations

import fcntl
import random
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

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


#: lock files of the ports this process reserved, kept open (so locked) until it exits
_reserved: list[IO[str]] = []


def _port_range() -> range:
    """Ports below the kernel's ephemeral range (``ip_local_port_range``, 32768-60999 by default).

    A port found with ``bind(0)`` is an ephemeral one: between the pick and the server's own bind,
    the kernel may hand it to anything else that binds port 0 or connects out (Temporal's dev server
    picks its internal services' ports that way). CI of 2026-12-06 lost a whole worker's stack to that
    race ("Failed starting Prometheus exporter: Address already in use"). Below the range, only a
    process that names a port can take it, and ours coordinate through ``_reserve``.
    """
    try:
        low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        low = 32768
    return range(10000, max(low, 10001))


def _reserve(port: int, folder: Path) -> bool:
    lock = (folder / str(port)).open("a")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        with socket.socket() as s:
            s.bind(("127.0.0.1", port))
    except OSError:  # another test process holds it, or something already listens there
        lock.close()
        return False
    _reserved.append(lock)
    return True


def free_port() -> int:
    """A loopback port no other process of any test run on this machine is given, free when picked.

    Reserved for this process's lifetime by a lock file under the temp folder (the kernel drops the
    lock when the process dies), so pytest-xdist workers and concurrent runs never pick the same one.
    """
    folder = Path(tempfile.gettempdir()) / "sterna-test-ports"
    folder.mkdir(exist_ok=True)
    ports = _port_range()
    for _ in range(1000):
        port = random.choice(ports)
        if _reserve(port, folder):
            return port
    raise RuntimeError(f"no free loopback port in {ports.start}-{ports.stop - 1} after 1000 tries")


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
