"""Google Cloud as a migration source through the REST API: the GCS emulator and the fake Compute Engine.

The source instance is made as a user's would be, through the real ``google-cloud-compute`` client:
an image imported from a sparse tarball of a sample disk, an instance booted from it. The fake's
disks keep the bytes of that tarball, and its Cloud Build runs the image export as Daisy does
(``tests/peers/gce.py`` says how faithful it is), so what reaches the local destination is
compared with the sample disk itself.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import RunningStack, wait_final
from tests.helpers import identical, inventories
from tests.peers.gce import FakeComputeEngine
from tests.peers.gcp import gcs_objects, source_instance

pytestmark = pytest.mark.slow
GIB = 1024**3


def test_gcp_to_local_identical(stack: RunningStack, gcp_conn_info: dict[str, Any], gce: FakeComputeEngine,
                                gcs_url: str, tmp_path: Path) -> None:
    disk = source_instance(gcp_conn_info, gcs_url, tmp_path, "web-gcp")
    _, dst = inventories(stack, [], 1)
    with stack.client() as api:
        a = api.create_endpoint("gcp-src", "gcp", gcp_conn_info)
        b = api.create_endpoint("kvm-gcp", "local", {"path": str(dst)})
        listed = api.http.get(f"/endpoints/{a['id']}/instances").json()["instances"]
        [web] = [i for i in listed if i["name"] == "web-gcp"]
        assert {4, 8, 16, 32} <= set(api.providers()["gcp"]["types"])
        assert (web["num_cpu"], web["memory_mb"], web["devices"]["disks"][0]["size_bytes"]) == (2, 4096, GIB)
        m = api.create_migration(origin_endpoint_id=a["id"], destination_endpoint_id=b["id"],
                                 instances=["web-gcp"], shutdown_instances=True)
        final = wait_final(api, m["id"])
        assert final["last_execution_status"] == "COMPLETED", [t["exception_details"] for t in final["tasks"]]
        assert gcp_conn_info["service_account"]["private_key"].splitlines()[1] not in \
            api.http.get(f"/migrations/{m['id']}").text
    [copied] = (dst / "web-gcp").glob("*.qcow2")
    assert identical(disk, copied)
    proj = gce.projects[gcp_conn_info["project_id"]]
    assert proj.instances["us-central1-a"]["web-gcp"]["status"] == "TERMINATED", "shutdown_instances stops it"
    # The export went through Cloud Build's image-export step, and what it made is gone after the copy.
    [build] = proj.builds.values()
    assert build["status"] == "SUCCESS" and "gce_vm_image_export" in build["steps"][0]["name"]
    assert not proj.snapshots and list(proj.images) == ["base"]
    assert not gcs_objects(gcs_url, gcp_conn_info["bucket"], prefix=f"sterna/{m['id']}/")


def test_gcp_source_errors_are_clear(stack: RunningStack, gcp_conn_info: dict[str, Any], gce: FakeComputeEngine,
                                     gcs_url: str, tmp_path: Path) -> None:
    source_instance(gcp_conn_info, gcs_url, tmp_path, "web-gcp")
    proj = gce.projects[gcp_conn_info["project_id"]]
    proj.cloudbuild_roles.discard("roles/compute.admin")
    secret = gcp_conn_info["service_account"]["private_key"].splitlines()[1]
    _, dst = inventories(stack, [], 1)
    with stack.client() as api:
        a = api.create_endpoint("gcp-src-err", "gcp", gcp_conn_info)
        b = api.create_endpoint("kvm-gcp-err", "local", {"path": str(dst)})
        m = api.create_migration(origin_endpoint_id=a["id"], destination_endpoint_id=b["id"], instances=["nope"])
        final = wait_final(api, m["id"])
        details = " ".join(t["exception_details"] or "" for t in final["tasks"])
        assert final["last_execution_status"] == "ERROR" and "instances/nope" in details, details
        m = api.create_migration(origin_endpoint_id=a["id"], destination_endpoint_id=b["id"], instances=["web-gcp"])
        final = wait_final(api, m["id"])
    details = " ".join(t["exception_details"] or "" for t in final["tasks"])
    assert final["last_execution_status"] == "ERROR"
    assert "ended FAILURE" in details and "lacks roles/compute.admin" in details, details
    assert "Traceback" not in details and secret not in details
    # The failed snapshot step removed its snapshot and image; only the user's own image is left.
    assert not proj.snapshots and list(proj.images) == ["base"]
    assert not gcs_objects(gcs_url, gcp_conn_info["bucket"], prefix=f"sterna/{m['id']}/")


def test_gcp_to_local_transfer_execution(stack: RunningStack, gcp_conn_info: dict[str, Any], gcs_url: str,
                                         gce: FakeComputeEngine, tmp_path: Path) -> None:
    """A transfer's execution reads through the same export; GCP has no change tracking here, so each
    execution is a full read (the replica is compared with the disk, not the bytes written)."""
    disk = source_instance(gcp_conn_info, gcs_url, tmp_path, "web-gcp")
    _, dst = inventories(stack, [], 1)
    with stack.client() as api:
        a = api.create_endpoint("gcp-src-t", "gcp", gcp_conn_info)
        b = api.create_endpoint("kvm-gcp-t", "local", {"path": str(dst)})
        t = api.create_transfer(origin_endpoint_id=a["id"], destination_endpoint_id=b["id"], instances=["web-gcp"],
                                skip_os_morphing=True, destination_environment={"verify_boot": False})
        e = api.wait_execution(t["id"], api.execute_transfer(t["id"])["id"], 300)
        assert e["status"] == "COMPLETED", [x["exception_details"] for x in e["tasks"]]
    [replica] = (dst / ".sterna-replicas" / t["id"] / "web-gcp").glob("*.raw")
    assert subprocess.run(["cmp", "-s", str(disk), str(replica)], check=False).returncode == 0
    proj = gce.projects[gcp_conn_info["project_id"]]
    assert not proj.snapshots and list(proj.images) == ["base"]
