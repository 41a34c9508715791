"""Google Cloud as a destination through the REST API: the GCS emulator and the fake Compute Engine.

The fake reads every image's tarball back from the emulator, so the checks below look at
the bytes GCE would import (``tests/peers/gce.py`` says how faithful the fake is).

Each action labels what it makes in GCE (``sterna-migration-id``) and names its GCS objects
(``sterna/<id>/``) with its own id: a one-shot migration with the migration's, a migration on
transfers with its deployment's (``tests.leftovers.deployments_of``). On transfers the source's data
moves into Sterna's replica store in REPLICATE_DISKS; the GCS resumable upload, the disk's move into
the cloud, is IMPORT_DISKS on either path (the deployment flattens its overlay there first).
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
from tests.leftovers import deployments_of
from tests.peers.gce import FakeComputeEngine, new_service_account
from tests.peers.gcp import gcs_download, gcs_objects

pytestmark = pytest.mark.slow
GIB = 1024**3
LABEL = "sterna-migration-id"


def _errors(final: dict[str, Any]) -> list[Any]:
    return [t["exception_details"] for t in final["tasks"] if t["exception_details"]]


def _actions(stack: RunningStack, migration: dict[str, Any]) -> list[str]:
    """The ids that label and name what the migration made: its own, or on transfers its deployment's."""
    return [migration["id"], *deployments_of(stack, migration)]


def _upload(migration: dict[str, Any]) -> tuple[str, dict[str, Any] | None]:
    """IMPORT_DISKS's status and the last progress of its GCS upload. On transfers that task first
    flattens the deployment's overlay ("Converting disk ..."), which sends nothing to GCS."""
    t = task(migration, "vm-a", "IMPORT_DISKS")
    ups = [p for p in t["progress_updates"] if (p["message"] or "").startswith("Uploading disk")]
    return t["status"], (ups[-1] if ups else None)


def _no_replicas(stack: RunningStack, migration_id: str) -> None:
    """A migration leaves no replica disk in Sterna's replica store (on transfers its disks were there)."""
    assert not (stack.settings.replica_store / migration_id).exists(), \
        sorted(map(str, (stack.settings.replica_store / migration_id).rglob("*")))


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
    # Labelled by the action that made it: the migration, or on transfers its deployment.
    made_by = inst["labels"][LABEL]
    assert made_by in _actions(stack, final) and inst["tags"] == {"items": ["web"]}
    [image] = proj.images.values()
    assert image["status"] == "READY" and image["labels"][LABEL] == made_by
    assert {f["type"] for f in image["guestOsFeatures"]} >= {"VIRTIO_SCSI_MULTIQUEUE", "GVNIC"}
    assert inst["disks"][0]["boot"] and inst["disks"][0]["source"].endswith(f"/disks/{inst['name']}")
    assert proj.disks["us-central1-a"][inst["name"]]["sourceImage"].endswith(f"/images/{image['name']}")

    # The image's source object unpacks (GNU tar, sparse-aware) to disk.raw = the converted disk,
    # zero-extended to the whole GiB GCE requires.
    # The bucket (this test's own) holds that one object, named for the action that made the image.
    [obj] = gcs_objects(gcs_url, bucket)
    assert obj["name"].startswith(f"sterna/{made_by}/"), obj["name"]
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
    _no_replicas(stack, m["id"])


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
    it holds, and sends only the rest; the image's tarball is still the converted disk.

    The kill lands in the GCS upload itself (its own progress, past a third), where the disk moves into
    the cloud: on transfers REPLICATE_DISKS only filled the replica store, and IMPORT_DISKS flattened
    the deployment's overlay before it began the upload."""
    src, _ = inventories(stack, ["vm-a"], data_mib=4)
    with stack.client() as api:
        origin = api.create_endpoint("inv-gcp-kill", "local", {"path": str(src)})
        dest = api.create_endpoint("gcp-kill", "gcp", gcp_conn_info)
        m = api.create_migration(origin_endpoint_id=origin["id"], destination_endpoint_id=dest["id"],
                                 instances=["vm-a"], network_map={"VM Network": "app"},
                                 destination_environment={"bandwidth_limit": 1024 * 1024, "keep_tarball": True,
                                                          "keep_image": True})

        def a_third_sent() -> bool:
            _, p = _upload(api.get_migration(m["id"]))
            return bool(p and p["total_steps"] and p["current_step"] > p["total_steps"] // 3)

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
    assert any(f"resuming after {resumed:,} bytes GCS already holds" in e for e in events), events
    print(f"after the kill: {resumed:,} bytes resumed from the GCS session, {sent:,} sent")
    [image] = gce.projects[gcp_conn_info["project_id"]].images.values()
    assert image["labels"][LABEL] in _actions(stack, final)
    source = re.fullmatch(r"https://storage.googleapis.com/([^/]+)/(.+)", image["rawDisk"]["source"])
    assert source, image["rawDisk"]
    bucket, name = source.groups()
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
    # Nothing is left behind by the failed migration: no instance, image or object (the bucket is this
    # test's own, and the migrations before this one failed before any upload), nor a replica disk.
    proj = gce.projects[gcp_conn_info["project_id"]]
    assert not proj.instances.get("us-central1-a") and not proj.images
    assert not gcs_objects(gce.storage_url, gcp_conn_info["bucket"])
    _no_replicas(stack, m["id"])


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
            status, p = _upload(api.get_migration(m["id"]))
            return status == "RUNNING" and bool(p and p["current_step"])

        wait_for(uploading, 120, 0.2, "upload under way")
        api.cancel_migration(m["id"])
        final = wait_final(api, m["id"], timeout=120)
    assert final["last_execution_status"] == "CANCELED"
    assert task(final, "vm-a", "CLEANUP_MIGRATION_RESOURCES")["status"] == "COMPLETED"
    proj = gce.projects[gcp_conn_info["project_id"]]
    assert not proj.instances.get("us-central1-a") and not proj.images and not proj.disks.get("us-central1-a")
    assert not gcs_objects(gce.storage_url, gcp_conn_info["bucket"])
    _no_replicas(stack, m["id"])


def _unpacked(gcs_url: str, bucket: str, source: str, into: Path) -> Path:
    """The disk.raw of the tarball the image at ``source`` (its rawDisk URL) was made from."""
    name = source.split(f"/{bucket}/", 1)[1]
    into.mkdir()
    (into / "disk.tar.gz").write_bytes(gcs_download(gcs_url, bucket, name))
    subprocess.run(["tar", "-xSzf", str(into / "disk.tar.gz"), "-C", str(into)], check=True)
    return into / "disk.raw"


def test_two_vms_with_the_same_disk_ids_each_get_their_own_disk(
        stack: RunningStack, gcp_conn_info: dict[str, Any], gce: FakeComputeEngine, gcs_url: str,
        tmp_path: Path) -> None:
    """One migration, two VMs whose disks are both ``disk-0`` (as every VM's first disk is on vSphere,
    key 2000): each instance boots from an image of its own VM's disk, and both objects stay."""
    src, _ = inventories(stack, ["vm-a", "vm-b"], data_mib=8)
    with stack.client() as api:
        origin = api.create_endpoint("inv-gcp-two", "local", {"path": str(src)})
        dest = api.create_endpoint("gcp-two", "gcp", gcp_conn_info)
        m = api.create_migration(
            origin_endpoint_id=origin["id"], destination_endpoint_id=dest["id"], instances=["vm-a", "vm-b"],
            destination_environment={"machine_type": "e2-medium", "keep_image": True, "keep_tarball": True},
            network_map={"VM Network": "app"})
        final = wait_final(api, m["id"])
    assert final["last_execution_status"] == "COMPLETED", _errors(final)
    proj = gce.projects[gcp_conn_info["project_id"]]
    images = {i["name"]: i for i in proj.images.values()}
    for vm in ("vm-a", "vm-b"):
        [inst] = [i for i in proj.instances["us-central1-a"].values() if i["name"].startswith(vm)]
        image = images[proj.disks["us-central1-a"][inst["name"]]["sourceImage"].rsplit("/", 1)[1]]
        raw = _unpacked(gcs_url, gcp_conn_info["bucket"], image["rawDisk"]["source"], tmp_path / vm)
        out = subprocess.run(["qemu-img", "compare", "-f", "raw", "-F", "raw", str(src / vm / "disk-0.raw"),
                              str(raw)], capture_output=True, text=True, check=False)
        assert out.returncode == 0, f"{vm}'s instance does not boot from {vm}'s disk: {out.stdout}"
    assert len(images) == 2 and len(gcs_objects(gcs_url, gcp_conn_info["bucket"])) == 2
