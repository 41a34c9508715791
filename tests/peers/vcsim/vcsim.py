"""Build and run ``vcsimx``: govmomi's vCenter simulator plus Sterna's shim (``main.go``).

The binary is built with Debian's Go and ``golang-github-vmware-govmomi-dev`` in GOPATH mode,
fully offline, into a cache directory keyed by the hash of ``main.go`` (a cold build takes
about 40 s, later runs reuse the binary). Each server listens on 127.0.0.1 with a port the
kernel picks, and is stopped by its own pid.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

SOURCE = Path(__file__).with_name("main.go")
GOCODE = Path("/usr/share/gocode")
CACHE = Path(os.environ.get("STERNA_CACHE_DIR", Path.home() / ".cache" / "sterna")) / "vcsimx"


class VcsimUnavailable(RuntimeError):
    """Go or the govmomi sources are missing (see deploy/apt/vsphere.txt)."""


def build() -> Path:
    """Return the path of the built shim, building it first when ``main.go`` changed."""
    digest = hashlib.sha256(SOURCE.read_bytes()).hexdigest()[:16]
    binary = CACHE / f"vcsimx-{digest}"
    if binary.exists():
        return binary
    if shutil.which("go") is None or not (GOCODE / "src/github.com/vmware/govmomi").is_dir():
        raise VcsimUnavailable("needs golang-go and golang-github-vmware-govmomi-dev (apt)")
    CACHE.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=CACHE) as gopath:
        pkg = Path(gopath, "src", "vcsimx")
        pkg.mkdir(parents=True)
        shutil.copy(SOURCE, pkg / "main.go")
        env = dict(
            os.environ,
            GO111MODULE="off",
            GOPATH=f"{gopath}:{GOCODE}",
            GOPROXY="off",
            GOFLAGS="",
            GOCACHE=str(CACHE / "go-build"),
        )
        tmp = binary.with_suffix(".tmp")
        subprocess.run(["go", "build", "-o", str(tmp), "."], cwd=pkg, env=env, check=True)
        tmp.rename(binary)  # atomic: a concurrent build never sees half a binary
    return binary


@dataclass
class Vcsim:
    """A running simulator. ``host`` is "127.0.0.1:PORT"."""

    process: subprocess.Popen[str]
    url: str
    user: str
    password: str
    tls: bool

    @property
    def host(self) -> str:
        return urlsplit(self.url).netloc

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def start(
    *,
    user: str = "sterna",
    password: str = "s3cret-pw",
    tls: bool = True,
    vms: int = 2,
    nfc_stream: bool = False,
    timeout: float = 30,
) -> Vcsim:
    """Start a simulator that only accepts ``user``/``password``; wait until it listens.

    ``nfc_stream`` makes export leases serve disks like a real vCenter: one stream, no Range.
    """
    args = [str(build()), "-l", "127.0.0.1:0", "-vm", str(vms), "-user", user]
    if tls:
        args.append("-tls")
    if nfc_stream:
        args.append("-nfc-stream")
    proc = subprocess.Popen(
        args,
        env=dict(os.environ, VCSIMX_PASSWORD=password),
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if line.startswith("VCSIMX_URL "):
            return Vcsim(proc, line.split()[1], user, password, tls)
        if not line and proc.poll() is not None:
            break
    proc.kill()
    proc.wait()
    raise RuntimeError("vcsimx did not start")
