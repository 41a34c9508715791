"""Google Cloud as a peer: ``gcp-storage-emulator`` (PyPI) for GCS and ``tests.peers.gce`` for Compute.

Both run in the test process for the session, on free loopback ports. The GCS emulator keeps
objects in memory and supports resumable uploads (chunks, ``bytes */*`` status queries, an
unknown total until the last chunk). Each test gets a project of its own in the fake, its own
bucket and a fresh service-account key registered for that project.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import pytest
import requests
from gcp_storage_emulator.server import create_server

from tests.peers import free_port
from tests.peers.gce import FakeComputeEngine, new_service_account


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
