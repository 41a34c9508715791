"""Build and run ``vcsimx``: govmomi's vCenter simulator plus Sterna's shim (``main.go``).

The binary is built with Debian's Go and ``golang-github-vmware-govmomi-dev`` in GOPATH mode,
fully offline, into a cache directory keyed by the hash of ``main.go`` (a cold build takes
about 40 s, later runs reuse the binary). Each server listens on 127.0.0.1 with a port the
kernel picks, and is stopped by its own pid.
"""

from __future__ import annotations

import hashlib
import os
import selectors
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from tests.peers import cache_lock

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
    with cache_lock(CACHE / "build.lock"):  # pytest-xdist workers: one builds, the others wait for it
        if binary.exists():
            return binary
        _build(binary)
    for old in CACHE.glob("vcsimx-*"):  # builds of earlier main.go versions
        if old != binary and old.suffix != ".tmp":
            old.unlink(missing_ok=True)
    return binary


def _build(binary: Path) -> None:
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
        tmp.rename(binary)  # atomic: a server started meanwhile never sees half a binary


@dataclass
class Vcsim:
    """A running simulator. ``host`` is "127.0.0.1:PORT"; its stderr goes to ``log``."""

    process: subprocess.Popen[str]
    url: str
    user: str
    password: str
    tls: bool
    log: Path

    @property
    def host(self) -> str:
        return urlsplit(self.url).netloc

    def stop(self) -> None:
        """Stop this simulator (by its own pid) and remove its log."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.process.stdout is not None:
            self.process.stdout.close()
        self.log.unlink(missing_ok=True)


def start(
    *,
    user: str = "sterna",
    password: str = "s3cret-pw",
    tls: bool = True,
    vms: int = 2,
    nfc_stream: bool = False,
    tools: bool = False,
    timeout: float = 30,
) -> Vcsim:
    """Start a simulator that only accepts ``user``/``password``; wait until it listens.

    ``nfc_stream`` makes export leases serve disks like a real vCenter: one stream, no Range.
    ``tools`` reports VMware Tools as running in every VM.
    """
    args = [str(build()), "-l", "127.0.0.1:0", "-vm", str(vms), "-user", user]
    if tls:
        args.append("-tls")
    if nfc_stream:
        args.append("-nfc-stream")
    if tools:
        args.append("-tools")
    fd, log_name = tempfile.mkstemp(prefix="vcsimx-", suffix=".log")
    log = Path(log_name)
    with os.fdopen(fd, "w") as stderr:
        proc = subprocess.Popen(
            args,
            env=dict(os.environ, VCSIMX_PASSWORD=password),
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
        )
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stdout, selectors.EVENT_READ)
        while time.monotonic() < deadline and sel.select(timeout=max(0.0, deadline - time.monotonic())):
            line = proc.stdout.readline()
            if line.startswith("VCSIMX_URL "):
                return Vcsim(proc, line.split()[1], user, password, tls, log)
            if not line:  # EOF: it exited
                break
    proc.kill()
    proc.wait()
    proc.stdout.close()
    tail = log.read_text(errors="replace")[-2000:]
    log.unlink(missing_ok=True)
    raise RuntimeError(f"vcsimx did not start: {tail}")
