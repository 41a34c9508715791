"""``sterna up`` runs the three parts in the foreground, and Ctrl-C stops them all cleanly."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from devstack.launcher import wait_port
from tests.conftest import wait_for
from tests.peers import free_port

pytestmark = pytest.mark.slow


def _listening(port: int) -> bool:
    import socket

    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def test_up_serves_and_ctrl_c_stops_everything(tmp_path: Path) -> None:
    api_port, temporal_port, ui_port = free_port(), free_port(), free_port()
    # Not the session stack's settings: this stack is all defaults but its ports and data dir.
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("STERNA_", "TEMPORAL_"))}
    env = {**clean, "STERNA_DATA_DIR": str(tmp_path), "STERNA_API_PORT": str(api_port),
           "STERNA_API_HOST": "127.0.0.1", "TEMPORAL_ADDRESS": f"127.0.0.1:{temporal_port}",
           "STERNA_TEMPORAL_UI_PORT": str(ui_port), "STERNA_WORKER_HOST_ID": "launcher-test"}
    proc = subprocess.Popen([sys.executable, "-m", "client.cli", "up"], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        wait_port("127.0.0.1", api_port, 60)
        assert httpx.get(f"http://127.0.0.1:{api_port}/v1/p/migrations").json() == {"migrations": []}
        assert httpx.get(f"http://127.0.0.1:{ui_port}/").status_code == 200  # the Temporal Web UI
        assert (tmp_path / "temporal.db").exists() and (tmp_path / "sterna.db").exists()
        wait_for(lambda: "worker polling" in (tmp_path / "logs" / "worker.log").read_text(), 30)
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, out
    assert "Stopping API, worker and Temporal" in out
    for port in (api_port, temporal_port, ui_port):
        assert not _listening(port), f"port {port} still served after Ctrl-C"


def test_up_reports_a_worker_that_dies_at_start(tmp_path: Path) -> None:
    """A worker that cannot start (here: its SDK metrics port is taken) stops ``sterna up`` with the reason
    before it announces the API as serving (and the test stack's fixture fails at once, not at a test's timeout)."""
    import socket

    api_port, temporal_port, ui_port = free_port(), free_port(), free_port()
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("STERNA_", "TEMPORAL_"))}
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        env = {**clean, "STERNA_DATA_DIR": str(tmp_path), "STERNA_API_PORT": str(api_port),
               "STERNA_API_HOST": "127.0.0.1", "TEMPORAL_ADDRESS": f"127.0.0.1:{temporal_port}",
               "STERNA_TEMPORAL_UI_PORT": str(ui_port), "STERNA_WORKER_HOST_ID": "launcher-test",
               "STERNA_WORKER_METRICS_ADDRESS": f"127.0.0.1:{free_port()}",
               "STERNA_TEMPORAL_METRICS_ADDRESS": f"127.0.0.1:{taken.getsockname()[1]}"}
        proc = subprocess.run([sys.executable, "-m", "client.cli", "up"], check=False, env=env,
                              capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0, proc.stdout
    assert "worker exited with" in proc.stderr and "while starting" in proc.stderr, (proc.stdout, proc.stderr)
    assert "Sterna API" not in proc.stdout, proc.stdout
    log = (tmp_path / "logs" / "worker.log").read_text()
    assert "in use" in log.lower(), log[-2000:]
    for port in (api_port, temporal_port, ui_port):
        assert not _listening(port), f"port {port} still served after the failed start"
