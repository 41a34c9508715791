"""Azurite (Microsoft's Azure Storage emulator, from npm) as the blob peer.

``ensure_azurite`` installs a pinned Azurite into ``~/.cache/sterna/azurite`` with npm (``make
test`` runs it before pytest through ``python -m tests.peers.azure.azurite``; the session fixture
runs it again, which is a no-op once installed). Azurite 3.35 is the newest release that runs on
Debian 12's Node 20 (3.36+ want Node 22).

Azurite models page blobs, sparse page ranges, Content-MD5 checks, SAS and stored access
policies as Azure does. Its gaps that matter here: a Put Page larger than 4 MiB is accepted
(Azure refuses it), and a page-range diff against a snapshot returns all ranges.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

AZURITE_VERSION = "3.35.0"
ACCOUNT = "devstoreaccount1"
# Azurite's fixed, publicly documented development key (not a secret).
ACCOUNT_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="


def cache_dir() -> Path:
    return Path(os.environ.get("STERNA_CACHE_DIR", Path.home() / ".cache" / "sterna")) / "azurite"


def ensure_azurite() -> Path:
    """The ``azurite-blob`` executable, installing the pinned version with npm when missing."""
    prefix = cache_dir()
    exe = prefix / "node_modules" / ".bin" / "azurite-blob"
    stamp = prefix / f".installed-{AZURITE_VERSION}"
    if exe.exists() and stamp.exists():
        return exe
    npm = shutil.which("npm")
    if npm is None:
        raise RuntimeError("npm is not installed (deploy/apt/azure.txt lists it): cannot install Azurite")
    prefix.mkdir(parents=True, exist_ok=True)
    subprocess.run([npm, "install", "--prefix", str(prefix), "--no-audit", "--no-fund", "--loglevel=error",
                    f"azurite@{AZURITE_VERSION}"], check=True, timeout=900)
    stamp.touch()
    return exe


@dataclass
class Azurite:
    url: str  # blob service endpoint, e.g. http://127.0.0.1:PORT/devstoreaccount1

    @property
    def connection_string(self) -> str:
        return (f"DefaultEndpointsProtocol=http;AccountName={ACCOUNT};AccountKey={ACCOUNT_KEY};"
                f"BlobEndpoint={self.url};")


@contextmanager
def running_azurite(workdir: Path, port: int) -> Iterator[Azurite]:
    """Start ``azurite-blob`` on 127.0.0.1:``port`` in memory; stop it (by its pid) afterwards."""
    from devstack.launcher import wait_port

    exe = ensure_azurite()
    workdir.mkdir(parents=True, exist_ok=True)
    log = open(workdir / "azurite.log", "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        [str(exe), "--blobHost", "127.0.0.1", "--blobPort", str(port), "--inMemoryPersistence",
         "--disableTelemetry", "--skipApiVersionCheck", "-s"],
        cwd=workdir,
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )
    try:
        try:
            wait_port("127.0.0.1", port, 60, proc, "azurite-blob")
        except SystemExit as exc:  # a failed peer fails the tests that need it, never the session
            raise RuntimeError(f"Azurite did not start: {exc} (see {workdir / 'azurite.log'})") from None
        yield Azurite(f"http://127.0.0.1:{port}/{ACCOUNT}")
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


if __name__ == "__main__":
    # `make test` set-up: install Azurite before pytest starts.
    t0 = time.monotonic()
    print(f"azurite: {ensure_azurite()} ({time.monotonic() - t0:.1f} s)", file=sys.stderr)
