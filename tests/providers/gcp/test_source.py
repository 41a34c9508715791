"""The GCP source's snapshot step run twice (activities run at least once): the second run takes the
first's snapshot, image and exported object instead of making them again; ``delete_snapshot`` twice
removes everything and tolerates it being gone."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from providers.base import ActionContext
from providers.gcp.provider import GcpProvider
from tests.peers.gce import FakeComputeEngine
from tests.peers.gcp import gce, gcp_conn_info, gcs_objects, gcs_url, source_instance

__all__ = ["gce", "gcp_conn_info", "gcs_url"]


def test_a_repeated_snapshot_step_takes_what_the_first_made(gcp_conn_info: dict[str, Any], gce: FakeComputeEngine,
                                                            gcs_url: str, tmp_path: Path) -> None:
    source_instance(gcp_conn_info, gcs_url, tmp_path, "vm")
    proj = gce.projects[gcp_conn_info["project_id"]]
    action = ActionContext(action_id="mig-twice", instance="vm")
    provider = GcpProvider(gcp_conn_info)
    first = provider.snapshot_instance({}, "vm", tmp_path / "work", action)
    second = GcpProvider(gcp_conn_info).snapshot_instance({}, "vm", tmp_path / "work", action)
    assert second.disks == first.disks
    assert len(proj.builds) == 1 and len(proj.snapshots) == 1 and len(proj.images) == 2  # "base" and ours
    [disk] = first.disks
    assert [o["name"] for o in gcs_objects(gcs_url, gcp_conn_info["bucket"], "sterna/")] == [disk.details["object"]]
    provider.delete_snapshot(first)
    provider.delete_snapshot(first)
    assert not proj.snapshots and list(proj.images) == ["base"]
    assert not gcs_objects(gcs_url, gcp_conn_info["bucket"], "sterna/")
