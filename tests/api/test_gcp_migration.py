"""Google Cloud as a destination through the REST API: the GCS emulator and the fake Compute Engine.

The fake reads every image's tarball back from the emulator, so the checks below look at
the bytes GCE would import (``tests/peers/gce.py`` says how faithful the fake is).
"""

from __future__ import annotations

import gzip
import io
import re
import signal
import subprocess
import tarfile
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import RunningStack, task, wait_final, wait_for
from tests.helpers import inventories
from tests.peers.gce import FakeComputeEngine, new_service_account
from tests.peers.gcp import gcs_download, gcs_objects

pytestmark = pytest.mark.slow
GIB = 1024**3


def _errors(final: dict[str, Any]) -> list[Any]:
    return [t["exception_details"] for t in final["tasks"] if t["exception_details"]]


def test_local_to_gcp(stack: RunningStack, gcp_conn_info: dict[str, Any], gce: FakeComputeEngine,
                      gcs_url: str, tmp_path: Path) -> None:
    project, bucket = gcp_conn_info["project_id"], gcp_conn_info["bucket"]
    src, _ = inventories(stack, ["vm-a"], data_mib=8)
    with stack.client() as api:
        origin = api.create_endpoint("inv-gcp", "local", {"path": str(src)})
        dest = api.create_endpoint("gcp", "gcp", gcp_conn_info)
        assert api.validate_endpoint(dest["id"])["valid"] is True
        # Networks, storage and options, listed from the Compute API.
        listing = {what: api.http.get(f"/endpoints/{dest['id']}/{what}").json()
                   for what in ("networks", "storage", "destination-options")}
        assert {n["id"] for n in listing["networks"]["networks"]} == {"default", "app"}
        assert {b["name"] for b in listing["storage"]["storage"]["storage_backends"]} >= {"pd-balanced", "pd-ssd"}
        options = {o["name"]: o["values"] for o in listing["destination-options"]["destination_options"]}
        assert "e2-medium" in options["machine_type"] and "us-central1-a" in options["zone"]
        m = api.create_migration(
            origin_endpoint_id=origin["id"], destination_endpoint_id=dest["id"], instances=["vm-a"],
            destination_environment={"machine_type": "e2-medium", "keep_image": True, "keep_tarball": True,
                                     "network_tags": ["web"]},
            network_map={"VM Network": "app"},
        )
        final = wait_final(api, m["id"])
        assert final["last_execution_status"] == "COMPLETED", _errors(final)
        assert gcp_conn_info["service_account"]["private_key"].splitlines()[1] not in \
            api.http.get(f"/migrations/{m['id']}").text
    proj = gce.projects[project]
    [inst] = proj.instances["us-central1-a"].values()
    assert inst["machineType"].endswith("/zones/us-central1-a/machineTypes/e2-medium")
    assert inst["networkInterfaces"][0]["subnetwork"].endswith("/regions/us-central1/subnetworks/app")
    assert inst["labels"]["sterna-migration-id"] == m["id"] and inst["tags"] == {"items": ["web"]}
    [image] = proj.images.values()
    assert image["status"] == "READY"
    assert {f["type"] for f in image["guestOsFeatures"]} >= {"VIRTIO_SCSI_MULTIQUEUE", "GVNIC"}
    assert inst["disks"][0]["boot"] and inst["disks"][0]["source"].endswith(f"/disks/{inst['name']}")
    assert proj.disks["us-central1-a"][inst["name"]]["sourceImage"].endswith(f"/images/{image['name']}")

    # The image's source object unpacks (GNU tar, sparse-aware) to disk.raw = the converted disk,
    # zero-extended to the whole GiB GCE requires.
    [obj] = gcs_objects(gcs_url, bucket, prefix=f"sterna/{m['id']}/")
    assert image["rawDisk"]["source"] == f"https://storage.googleapis.com/{bucket}/{obj['name']}"
    tarball = gcs_download(gcs_url, bucket, obj["name"])
    (tmp_path / "disk.tar.gz").write_bytes(tarball)
    subprocess.run(["tar", "-xSzf", str(tmp_path / "disk.tar.gz"), "-C", str(tmp_path)], check=True)
    converted = src / "vm-a" / "disk-0.raw"
    unpacked = tmp_path / "disk.raw"
    assert unpacked.stat().st_size == GIB == int(image["diskSizeGb"]) * GIB > converted.stat().st_size
    # qemu-img compare: identical over the converted disk's size, and only zeros in the larger one's tail.
    out = subprocess.run(["qemu-img", "compare", "-f", "raw", "-F", "raw", str(converted), str(unpacked)],
                         capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stdout + out.stderr
    # Sparse: the tarball stores the allocated extents only, not the 1 GiB disk.raw.
    with tarfile.open(fileobj=gzip.GzipFile(fileobj=io.BytesIO(tarball)), mode="r|") as tf:
        member = tf.next()
        assert member is not None and member.name == "disk.raw" and member.issparse()
        stored = sum(int(entry[1]) for entry in getattr(member, "sparse", None) or [])
    allocated = converted.stat().st_blocks * 512
    print(f"tarball {len(tarball):,} bytes (stores {stored:,} bytes of a {GIB:,}-byte disk.raw) "
          f"for {allocated:,} allocated bytes of the converted {converted.stat().st_size:,}-byte disk")
    assert stored <= allocated and len(tarball) < allocated + 1024 * 1024


def _unpacks_to(tarball: bytes, converted: Path, tmp_path: Path) -> None:
    """The tarball's disk.raw is ``converted``, zero-extended (qemu-img compare allows a zero tail)."""
    (tmp_path / "disk.tar.gz").write_bytes(tarball)
    subprocess.run(["tar", "-xSzf", str(tmp_path / "disk.tar.gz"), "-C", str(tmp_path)], check=True)
    out = subprocess.run(["qemu-img", "compare", "-f", "raw", "-F", "raw", str(converted), str(tmp_path / "disk.raw")],
                         capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stdout + out.stderr


def test_worker_killed_mid_upload_resumes_the_gcs_session(stack: RunningStack, gcp_conn_info: dict[str, Any],
                                                          gce: FakeComputeEngine, gcs_url: str,
                                                          tmp_path: Path) -> None:
    """A SIGKILL runs no handler: the next attempt finds the upload session in scratch, asks GCS how much
    it holds, and sends only the rest; the image's tarball is still the converted disk."""
    src, _ = inventories(stack, ["vm-a"], data_mib=4)
    with stack.client() as api:
        origin = api.create_endpoint("inv-gcp-kill", "local", {"path": str(src)})
        dest = api.create_endpoint("gcp-kill", "gcp", gcp_conn_info)
        m = api.create_migration(origin_endpoint_id=origin["id"], destination_endpoint_id=dest["id"],
                                 instances=["vm-a"], network_map={"VM Network": "app"},
                                 destination_environment={"bandwidth_limit": 1024 * 1024, "keep_tarball": True,
                                                          "keep_image": True})

        def a_third_sent() -> bool:
            p = task(api.get_migration(m["id"]), "vm-a", "IMPORT_DISKS")["progress_updates"]
            return bool(p and p[-1]["total_steps"] and p[-1]["current_step"] > p[-1]["total_steps"] // 3)

        wait_for(a_third_sent, 120, 0.2, "a third of the upload")
        worker = stack.stack.procs["worker"]
        worker.send_signal(signal.SIGKILL)
        worker.wait()
        stack.stack.restart("worker")
        final = wait_final(api, m["id"], timeout=240)
    assert final["last_execution_status"] == "COMPLETED", _errors(final)
    events = [e["message"] for e in task(final, "vm-a", "IMPORT_DISKS")["events"]]
    done = next((e for e in events if " complete: tarball " in e), "")
    counts = re.search(r"\(([\d,]+) bytes sent now, ([\d,]+) resumed", done)
    assert counts, events
    sent, resumed = (int(g.replace(",", "")) for g in counts.groups())
    assert resumed > 0, f"the upload started over: {done}"
    print(f"after the kill: {resumed:,} bytes resumed from the GCS session, {sent:,} sent")
    [image] = gce.projects[gcp_conn_info["project_id"]].images.values()
    bucket, name = re.fullmatch(r"https://storage.googleapis.com/([^/]+)/(.+)", image["rawDisk"]["source"]).groups()
    _unpacks_to(gcs_download(gcs_url, bucket, name), src / "vm-a" / "disk-0.raw", tmp_path)


def test_gcp_errors_are_clear(stack: RunningStack, gcp_conn_info: dict[str, Any], gce: FakeComputeEngine) -> None:
    key = gcp_conn_info["service_account"]
    # The right account, the wrong private key (as after a key rotation).
    wrong = {**new_service_account(gcp_conn_info["project_id"]), "client_email": key["client_email"],
             "token_uri": key["token_uri"]}
    src, _ = inventories(stack, ["vm-a"], data_mib=1)
    with stack.client() as api:
        bad = api.create_endpoint("gcp-bad-key", "gcp", {**gcp_conn_info, "service_account": wrong})
        result = api.validate_endpoint(bad["id"])
        assert result["valid"] is False and "refused the service-account key" in result["message"]
        for secret in (wrong["private_key"], key["private_key"]):
            assert secret.splitlines()[1] not in result["message"]
        zone = api.create_endpoint("gcp-bad-zone", "gcp", {**gcp_conn_info, "zone": "xx-nowhere-9"})
        result = api.validate_endpoint(zone["id"])
        assert result["valid"] is False and "unknown zone 'xx-nowhere-9'" in result["message"]
        unknown = api.create_endpoint("gcp-no-project", "gcp", {**gcp_conn_info, "project_id": "no-such-proj"})
        result = api.validate_endpoint(unknown["id"])
        assert result["valid"] is False and "unknown project 'no-such-proj'" in result["message"]
        gce.add_project("someone-elses")  # exists, but the account is no member of it
        other = api.create_endpoint("gcp-no-perm", "gcp", {**gcp_conn_info, "project_id": "someone-elses"})
        result = api.validate_endpoint(other["id"])
        assert result["valid"] is False and "permission denied" in result["message"]
        assert "compute.projects.get" in result["message"]

        origin = api.create_endpoint("inv-gcp-err", "local", {"path": str(src)})
        dest = api.create_endpoint("gcp-ok", "gcp", gcp_conn_info)
        m = api.create_migration(origin_endpoint_id=origin["id"], destination_endpoint_id=dest["id"],
                                 instances=["vm-a"], network_map={"VM Network": "app"},
                                 destination_environment={"machine_type": "e9-enormous"})
        final = wait_final(api, m["id"])
        assert final["last_execution_status"] == "ERROR"
        validate = task(final, "vm-a", "VALIDATE_MIGRATION_INPUTS")["exception_details"] or ""
        assert "unknown machine type 'e9-enormous' in zone us-central1-a" in validate
        assert "Traceback" not in validate and key["private_key"].splitlines()[1] not in validate

        # A zone the project does not have, named in the migration rather than the endpoint.
        m = api.create_migration(origin_endpoint_id=origin["id"], destination_endpoint_id=dest["id"],
                                 instances=["vm-a"], network_map={"VM Network": "app"},
                                 destination_environment={"zone": "mars-north1-a"})
        final = wait_final(api, m["id"])
        validate = task(final, "vm-a", "VALIDATE_MIGRATION_INPUTS")["exception_details"] or ""
        assert final["last_execution_status"] == "ERROR" and "unknown zone 'mars-north1-a'" in validate, validate
        assert "Traceback" not in validate and key["private_key"].splitlines()[1] not in validate

        # A quota error from GCE, reported on the instance's operation, after the upload.
        gce.projects[gcp_conn_info["project_id"]].cpu_quota["us-central1"] = 1
        m = api.create_migration(origin_endpoint_id=origin["id"], destination_endpoint_id=dest["id"],
                                 instances=["vm-a"], network_map={"VM Network": "app"},
                                 destination_environment={"machine_type": "e2-small"})
        final = wait_final(api, m["id"])
    assert final["last_execution_status"] == "ERROR"
    details = " ".join(_errors(final))
    assert "Quota 'CPUS' exceeded" in details and "QUOTA_EXCEEDED" in details, details
    assert key["private_key"].splitlines()[1] not in details and key["private_key_id"] not in details
    # Nothing is left behind by the failed migration: no instance, image or object.
    proj = gce.projects[gcp_conn_info["project_id"]]
    assert not proj.instances.get("us-central1-a") and not proj.images
    assert not gcs_objects(gce.storage_url, gcp_conn_info["bucket"], prefix=f"sterna/{m['id']}/")


def test_cancel_mid_upload_leaves_nothing(stack: RunningStack, gcp_conn_info: dict[str, Any],
                                         gce: FakeComputeEngine) -> None:
    src, _ = inventories(stack, ["vm-a"], data_mib=8)
    with stack.client() as api:
        origin = api.create_endpoint("inv-gcp-cancel", "local", {"path": str(src)})
        dest = api.create_endpoint("gcp-cancel", "gcp", gcp_conn_info)
        m = api.create_migration(origin_endpoint_id=origin["id"], destination_endpoint_id=dest["id"],
                                 instances=["vm-a"], network_map={"VM Network": "app"},
                                 destination_environment={"bandwidth_limit": 1024 * 1024})

        def uploading() -> bool:
            t = task(api.get_migration(m["id"]), "vm-a", "IMPORT_DISKS")
            p = t["progress_updates"]
            return t["status"] == "RUNNING" and bool(p and p[-1]["current_step"])

        wait_for(uploading, 120, 0.2, "upload under way")
        api.cancel_migration(m["id"])
        final = wait_final(api, m["id"], timeout=120)
    assert final["last_execution_status"] == "CANCELED"
    assert task(final, "vm-a", "CLEANUP_MIGRATION_RESOURCES")["status"] == "COMPLETED"
    proj = gce.projects[gcp_conn_info["project_id"]]
    assert not proj.instances.get("us-central1-a") and not proj.images and not proj.disks.get("us-central1-a")
    assert not gcs_objects(gce.storage_url, gcp_conn_info["bucket"])
