"""The boot check's probe port is only free when it is picked: if something binds it before QEMU does, QEMU
exits at once, and the check starts it again on a new port instead of ending the attempt as "QEMU exited".

Real QEMU on an empty disk (nothing boots; the check ends at its short timeout), with the picked port held
by a listening socket, as any other process on the host could hold it.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from providers.local import boot


@pytest.fixture
def taken() -> Iterator[int]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        yield int(s.getsockname()[1])


def _disk(tmp_path: Path) -> str:
    disk = tmp_path / "empty.raw"
    disk.write_bytes(bytes(1024 * 1024))
    return str(disk)


def test_a_probe_port_taken_before_qemu_binds_it_is_replaced(
        tmp_path: Path, taken: int, monkeypatch: pytest.MonkeyPatch) -> None:
    picks = [taken, taken]
    real = boot._free_port
    monkeypatch.setattr(boot, "_free_port", lambda: picks.pop(0) if picks else real())

    result = boot.boot_check(_disk(tmp_path), "raw", timeout=3, workdir=tmp_path / "check")

    # Two launches lost the race and the third ran until the check's own timeout.
    assert picks == []
    assert result.outcome == "timeout", result.reason
    cmdline = (tmp_path / "check" / "qemu.cmdline").read_text()
    assert "hostfwd=tcp:127.0.0.1:" in cmdline and f":{taken}-" not in cmdline, cmdline


def test_a_port_that_stays_taken_ends_the_attempt_with_qemus_reason(
        tmp_path: Path, taken: int, monkeypatch: pytest.MonkeyPatch) -> None:
    launches: list[int] = []

    def pick() -> int:
        launches.append(taken)
        return taken

    monkeypatch.setattr(boot, "_free_port", pick)

    result = boot.boot_check(_disk(tmp_path), "raw", timeout=60, workdir=tmp_path / "check")

    assert len(launches) == 1 + boot.PORT_RACES
    assert result.outcome == "qemu-exited"
    assert boot.PORT_TAKEN in result.reason and f"{taken}" in result.reason, result.reason
