"""Fixtures for OS-morphing tests: synthetic distribution trees and the real Debian guest."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from osmorphing import DirectoryGuest
from tests.guests.trees import build_tree
from tests.guests.windows import build_sources, cached_images
from tests.osmorphing.windows_checks import EXISTING_GPO

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


#: the Windows versions of the synthetic NTFS disks (tests/guests/windows.py)
VERSIONS = ["windows10", "windows11", "windows2008r2", "windows2012r2", "windows2016", "windows2019", "windows2022"]


@pytest.fixture(scope="session")
def windows_sources(tmp_path_factory: pytest.TempPathFactory) -> Any:
    return build_sources(tmp_path_factory.mktemp("windows-sources"))


@pytest.fixture(scope="session")
def windows_base_images(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One NTFS disk per version, built once into ``~/.cache/sterna`` (one appliance); tests copy them."""
    return cached_images(tmp_path_factory.mktemp("windows-images"), VERSIONS, existing_gpo=EXISTING_GPO)
