"""Fixtures for OS-morphing tests: synthetic distribution trees and the real Debian guest."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

from osmorphing import DirectoryGuest
from tests.guests.trees import build_tree

# libguestfs cannot use KVM on the CI hosts; the appliance runs under TCG.
os.environ.setdefault("LIBGUESTFS_BACKEND", "direct")
os.environ.setdefault("LIBGUESTFS_BACKEND_SETTINGS", "force_tcg")


def pytest_configure(config: pytest.Config) -> None:
    # The project's pyproject registers "slow" too; registering here keeps this directory runnable alone.
    config.addinivalue_line("markers", "slow: end-to-end tests that drive the whole stack")


@pytest.fixture
def make_guest(tmp_path: Path) -> Callable[[str], DirectoryGuest]:
    """Build a synthetic tree by name (``debian``, ``rhel``, ``windows2019``...) as a ``DirectoryGuest``."""

    def make(name: str) -> DirectoryGuest:
        root = tmp_path / name
        devices = build_tree(name, root)
        return DirectoryGuest(root, devices)

    return make
