"""Google Cloud as a peer: ``gcp-storage-emulator`` (PyPI) for GCS and ``tests.peers.gce`` for Compute.

Both run in the test process for the session, on free loopback ports. The GCS emulator keeps
objects in memory and supports resumable uploads (chunks, ``bytes */*`` status queries, an
unknown total until the last chunk). Each test gets a project of its own in the fake, its own
bucket and a fresh service-account key registered for that project.
"""

from __future__ import annotations

import logging
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
import requests
from gcp_storage_emulator.server import create_server

from tests.peers import free_port
from tests.peers.gce import FakeComputeEngine, new_service_account

GIB = 1024**3


@pytest.fixture(scope="session")
def gcs_url() -> Iterator[str]:
    logging.getLogger("gcp_storage_emulator").setLevel(logging.ERROR)
    port = free_port()
    server = create_server("127.0.0.1", port, in_memory=True)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


@pytest.fixture(scope="session")
def gce(gcs_url: str) -> Iterator[FakeComputeEngine]:
    fake = FakeComputeEngine(gcs_url).start()
    yield fake
    fake.stop()


@pytest.fixture
def gcp_conn_info(gce: FakeComputeEngine, gcs_url: str) -> dict[str, Any]:
    return new_project(gce, gcs_url)


def new_project(gce: FakeComputeEngine, gcs_url: str) -> dict[str, Any]:
    """A new project with its bucket, and the connection_info a user would give for it."""
    project = f"proj-{uuid.uuid4().hex[:10]}"
    gce.add_project(project)
    key = new_service_account(project)
    key["token_uri"] = f"{gce.url}/token"
    gce.add_account(key, {project})
    bucket = f"{project}-staging"
    requests.post(f"{gcs_url}/storage/v1/b", params={"project": project}, json={"name": bucket},
                  timeout=30).raise_for_status()
    return {
        "project_id": project,
        "service_account": key,
        "zone": "us-central1-a",
        "bucket": bucket,
        "compute_endpoint": gce.url,
        "storage_endpoint": gcs_url,
        "cloudbuild_endpoint": gce.url,
    }


def gcs_objects(gcs_url: str, bucket: str, prefix: str = "") -> list[dict[str, Any]]:
    r = requests.get(f"{gcs_url}/storage/v1/b/{bucket}/o", params={"prefix": prefix}, timeout=30)
    r.raise_for_status()
    return list(r.json().get("items") or [])


def gcs_download(gcs_url: str, bucket: str, name: str) -> bytes:
    r = requests.get(f"{gcs_url}/storage/v1/b/{bucket}/o/{quote(name, safe='')}",
                     params={"alt": "media"}, timeout=60)
    r.raise_for_status()
    return r.content


def gcs_upload(gcs_url: str, bucket: str, name: str, data: bytes) -> None:
    requests.post(f"{gcs_url}/upload/storage/v1/b/{bucket}/o", params={"uploadType": "media", "name": name},
                  data=data, headers={"Content-Type": "application/gzip"}, timeout=120).raise_for_status()


def source_instance(conn_info: dict[str, Any], gcs_url: str, tmp_path: Path, name: str) -> Path:
    """A 1 GiB sample disk (2 MiB of data) as the boot disk of instance ``name``; returns the disk."""
    from google.cloud import compute_v1

    from devstack.sample import build_disk

    disk = tmp_path / "disk.raw"
    build_disk(disk, size=GIB, data_mib=2, seed=17)
    subprocess.run(["tar", "--format=gnu", "-cSzf", str(tmp_path / "disk.tar.gz"), "-C", str(tmp_path),
                    "disk.raw"], check=True)
    bucket = conn_info["bucket"]
    gcs_upload(gcs_url, bucket, "base/disk.tar.gz", (tmp_path / "disk.tar.gz").read_bytes())
    from providers.gcp.provider import GcpProvider

    conn = GcpProvider(conn_info).conn
    op = conn.compute("ImagesClient").insert_unary(project=conn.project, image_resource=compute_v1.Image(
        name="base", raw_disk=compute_v1.RawDisk(source=f"https://storage.googleapis.com/{bucket}/base/disk.tar.gz")))
    conn.wait(op, "image")
    op = conn.compute("InstancesClient").insert_unary(project=conn.project, zone=conn.zone, instance_resource=(
        compute_v1.Instance(name=name, machine_type=f"zones/{conn.zone}/machineTypes/e2-medium",
                            disks=[compute_v1.AttachedDisk(boot=True, auto_delete=True, initialize_params=(
                                compute_v1.AttachedDiskInitializeParams(
                                    source_image=f"projects/{conn.project}/global/images/base")))],
                            network_interfaces=[compute_v1.NetworkInterface(subnetwork="app")])))
    conn.wait(op, "instance")
    return disk
