"""The replica store (``providers.replica_store``): where OpenStack, Azure and GCP destinations keep a
transfer's replica disks, on the worker's file system. End to end: ``tests/api/test_replica_store.py``."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from api.transfers import holds_replicas
from core.errors import InvalidInput
from core.settings import reset_settings
from providers.azure.provider import AzureProvider
from providers.gcp.provider import GcpProvider
from providers.local.provider import LocalProvider
from providers.openstack.provider import OpenStackProvider
from providers.replica_store import StoredReplicas

TRANSFER = "6f1c2e0a-8d4b-4c57-9a0e-3b2d1f4e5a6b"


@pytest.fixture
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A replica store outside the data dir, as an operator sets it (``STERNA_REPLICA_DIR``)."""
    monkeypatch.setenv("STERNA_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("STERNA_REPLICA_DIR", str(tmp_path / "replicas"))
    monkeypatch.delenv("STERNA_LOCAL_ROOTS", raising=False)
    reset_settings()
    yield tmp_path / "replicas"
    reset_settings()


def test_every_built_in_destination_holds_replica_disks() -> None:
    """What lets every migration run as a transfer (``api.live_migrations.applies`` is the setting alone)."""
    for platform in ("local", "aws", "openstack", "azure", "gcp"):
        assert holds_replicas(platform), platform
    for source_only in ("vmware_vsphere", "ova"):
        assert not holds_replicas(source_only), source_only


@pytest.mark.parametrize("cls", [OpenStackProvider, AzureProvider, GcpProvider])
def test_cloud_destinations_keep_replicas_in_the_store(store: Path, cls: type[StoredReplicas]) -> None:
    provider = cls({})  # no credentials: the store is Sterna's own, no cloud is asked
    disk = provider.replica_disk({}, TRANSFER, "vm-a", "disk-0", 1024)
    assert (disk.path, disk.format, disk.size_bytes) == (str(store / TRANSFER / "vm-a" / "disk-0.raw"), "raw", 1024)
    assert Path(disk.path).parent.is_dir()
    Path(disk.path).write_bytes(b"x" * 1024)
    assert provider.delete_replica_disks({}, TRANSFER) == [f"Removed replica disks {store / TRANSFER}"]
    assert not (store / TRANSFER).exists() and store.is_dir()
    assert provider.delete_replica_disks({}, TRANSFER) == [], "removing twice is a no-op"


def test_names_made_safe_stay_apart_and_inside_the_store(store: Path) -> None:
    provider = OpenStackProvider({})
    paths = {provider.replica_disk({}, TRANSFER, name, disk, 1).path
             for name, disk in (("vm a", "d/0"), ("vm_a", "d_0"), ("../..", "..")) }
    assert len(paths) == 3
    for path in paths:
        assert path is not None and Path(path).resolve().is_relative_to(store / TRANSFER)
    for bad in ("", "..", "a/b", "../x"):
        with pytest.raises(InvalidInput, match="Invalid transfer id"):
            provider.replica_disk({}, bad, "vm-a", "disk-0", 1)
        with pytest.raises(InvalidInput, match="Invalid transfer id"):
            provider.delete_replica_disks({}, bad)


def test_local_endpoints_cannot_reach_the_store(store: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STERNA_LOCAL_ROOTS", json.dumps([str(tmp_path)]))
    reset_settings()
    (store / TRANSFER).mkdir(parents=True)
    (tmp_path / "vms").mkdir()
    assert LocalProvider({"path": str(tmp_path / "vms")}).root == tmp_path / "vms"
    for path in (store, store / TRANSFER, tmp_path):
        with pytest.raises(InvalidInput, match="overlaps Sterna's own data"):
            LocalProvider({"path": str(path)})
