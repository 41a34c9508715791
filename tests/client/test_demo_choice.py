"""Which VM ``sterna demo`` migrates: the bootable Debian guest unless ``--quick``."""

from __future__ import annotations

from pathlib import Path

import pytest

from client.cli import parser
from devstack import demo
from devstack.guest import recipe_hash


def test_the_default_demo_is_the_bootable_guest_and_quick_is_the_sample() -> None:
    assert parser().parse_args(["demo"]).quick is False
    args = parser().parse_args(["demo", "--quick", "--exit"])
    assert args.quick and args.exit
    assert parser().parse_args(["demo", "--bootable"]).quick is False  # the old flag still parses


def test_a_cached_guest_is_used_without_a_build(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    disk = tmp_path / "sterna" / "guests" / recipe_hash() / "disk.raw"
    disk.parent.mkdir(parents=True)
    disk.write_bytes(b"")
    assert demo._bootable_guest() == disk
    assert "Building" not in capsys.readouterr().out
