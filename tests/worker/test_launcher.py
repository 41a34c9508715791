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
