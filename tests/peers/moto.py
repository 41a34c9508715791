"""moto in server mode as the AWS peer: one in-process server per session on a free port.

Every test starts from a reset server. Where moto models less than AWS, the fixtures here
add the missing piece to the *server* (never to boto3), and say so:

* ``guest_volumes``: moto's EC2 volumes hold no bytes, and its EC2 and EBS-direct snapshot
  stores are not linked, so a snapshot taken with ``CreateSnapshot`` can't be read with
  ``ListSnapshotBlocks``. The fixture lets a test put guest bytes on a volume and makes
  moto's ``CreateSnapshot`` capture them into its EBS-direct store, as AWS does.
* ``ebs_inheritance``: moto ignores StartSnapshot's ``ParentSnapshotId``, so a child lists only
  the blocks written into it, and once its parent is deleted nothing reads it as the disk it is.
  On AWS a child reads as the whole disk (ListSnapshotBlocks lists its ancestors' blocks too) and
  deleting a parent never loses a block a child needs. The fixture makes the server do that.
* ``recorder``: moto's own request recorder, to check parameters moto accepts but ignores
  (RegisterImage's block-device mappings).
"""

from __future__ import annotations

import os
import tempfile

# moto's catalogue of ~1300 public AMIs (and their snapshots) is rebuilt after every reset
# and is of no use here: the tests register their own images.
os.environ["MOTO_EC2_LOAD_DEFAULT_AMIS"] = "false"
# The recorder's file is chosen when moto is imported; keep it out of the working tree
# (the session fixture removes it).
os.environ.setdefault(
    "MOTO_RECORDER_FILEPATH", os.path.join(tempfile.mkdtemp(prefix="moto-rec-"), "rec.jsonl")
)

import base64
import hashlib
import json
import logging
import shutil
import threading
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs

import boto3
import pytest
import requests
from moto.ebs.models import EBSBackend as EbsDirectBackend
from moto.ebs.models import EBSSnapshot, ebs_backends
from moto.ebs.responses import EBSResponse
from moto.ec2.models import ec2_backends
from moto.ec2.models.elastic_block_store import EBSBackend as Ec2VolumeBackend
from moto.server import ThreadedMotoServer

from providers.aws.provider import AwsProvider

REGION = "us-east-1"
BLOCK = 512 * 1024


@pytest.fixture(scope="session")
def moto_url() -> Iterator[str]:
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()
    rec_dir = os.path.dirname(os.environ["MOTO_RECORDER_FILEPATH"])
    if os.path.basename(rec_dir).startswith("moto-rec-"):
        shutil.rmtree(rec_dir, ignore_errors=True)


@pytest.fixture
def conn_info(moto_url: str) -> dict[str, Any]:
    """Fresh moto state and the connection_info a user would give for it."""
    requests.post(f"{moto_url}/moto-api/reset", timeout=30).raise_for_status()
    return {
        "region": REGION,
        "access_key_id": "AKIDTESTTESTTEST",
        "secret_access_key": "s3cr3t-test-value-never-shown",
        "endpoint_url": moto_url,
    }


@pytest.fixture(autouse=True)
def fast_polling(monkeypatch: pytest.MonkeyPatch) -> None:
    """moto changes state at once; poll it every 50 ms instead of AWS' seconds."""
    monkeypatch.setattr(AwsProvider, "poll_delay", 0.05)


@pytest.fixture
def provider(conn_info: dict[str, Any]) -> AwsProvider:
    return AwsProvider(conn_info)


def _client(conn_info: dict[str, Any], service: str) -> Any:
    return boto3.client(
        service,
        endpoint_url=conn_info["endpoint_url"],
        region_name=conn_info["region"],
        aws_access_key_id=conn_info["access_key_id"],
        aws_secret_access_key=conn_info["secret_access_key"],
    )


@pytest.fixture
def ec2(conn_info: dict[str, Any]) -> Any:
    """The test's own EC2 client, to look at the peer's state independently of the provider."""
    return _client(conn_info, "ec2")


@pytest.fixture
def ebs(conn_info: dict[str, Any]) -> Any:
    return _client(conn_info, "ebs")


@pytest.fixture
def subnet(ec2: Any) -> dict[str, Any]:
    """A subnet of moto's default VPC, and a security group in that VPC."""
    sub = sorted(ec2.describe_subnets()["Subnets"], key=lambda s: s["AvailabilityZone"])[0]
    group = ec2.create_security_group(GroupName="sterna-test", Description="test", VpcId=sub["VpcId"])
    return {**sub, "GroupId": group["GroupId"]}


class GuestVolumes:
    """Contents for moto's EC2 volumes, captured by CreateSnapshot into the EBS-direct store."""

    def __init__(self) -> None:
        self.contents: dict[str, bytes] = {}

    def write(self, volume_id: str, data: bytes) -> None:
        self.contents[volume_id] = data

    def capture(self, backend: Any, volume_id: str, snapshot: Any) -> None:
        data = self.contents.get(volume_id)
        if data is not None:
            self.fill(backend, snapshot, data)

    def fill_snapshot(self, snapshot_id: str, data: bytes, account: str = "123456789012") -> None:
        """Give an existing snapshot (e.g. the one moto made for an AMI) readable blocks."""
        backend = ec2_backends[account][REGION]
        self.fill(backend, backend.snapshots[snapshot_id], data)

    @staticmethod
    def fill(backend: Any, snapshot: Any, data: bytes) -> None:
        ebs_snap = EBSSnapshot(account_id=backend.account_id, snapshot=snapshot)
        ebs_snap.block_size = BLOCK  # what AWS reports (moto says 512)
        ebs_snap.status = "completed"
        for index in range(0, -(-len(data) // BLOCK)):
            block = data[index * BLOCK : (index + 1) * BLOCK].ljust(BLOCK, b"\0")
            if block.count(0) != BLOCK:
                checksum = base64.b64encode(hashlib.sha256(block).digest()).decode()
                ebs_snap.put_block(index, block, checksum, "SHA256", BLOCK)
        ebs_backends[backend.account_id][backend.region_name].snapshots[snapshot.id] = ebs_snap


@pytest.fixture
def guest_volumes(monkeypatch: pytest.MonkeyPatch) -> GuestVolumes:
    guest = GuestVolumes()
    original = Ec2VolumeBackend.create_snapshot

    def create_snapshot(self: Any, volume_id: str, description: str, *args: Any, **kwargs: Any) -> Any:
        snapshot = original(self, volume_id, description, *args, **kwargs)
        guest.capture(self, volume_id, snapshot)
        return snapshot

    monkeypatch.setattr(Ec2VolumeBackend, "create_snapshot", create_snapshot)
    return guest


@pytest.fixture
def ebs_inheritance(monkeypatch: pytest.MonkeyPatch) -> None:
    """A child snapshot starts with its parent's blocks, as on AWS (``inherit_parent_blocks``)."""
    inherit_parent_blocks(monkeypatch)


def inherit_parent_blocks(monkeypatch: pytest.MonkeyPatch) -> None:
    """A child snapshot starts with its parent's blocks, as on AWS (see the module docstring).

    How faithful: ListSnapshotBlocks/GetSnapshotBlock on a child return the parent's block wherever
    the child wrote none, and keep doing so after the parent is deleted (the child holds references
    to the parent's block objects, as AWS keeps the data a child needs). Not modelled: AWS refusing
    a parent that is not completed, or one of another volume size; ListChangedBlocks is moto's own.
    Tests that look at which blocks each snapshot holds (``test_aws_transfer``'s chain test,
    ``test_replica_deploy``) run without this fixture and compose the chain themselves.
    """
    parents = threading.local()
    start_response, start_backend = EBSResponse.start_snapshot, EbsDirectBackend.start_snapshot

    def response(self: Any) -> Any:
        parents.current = self._get_param("ParentSnapshotId")
        try:
            return start_response(self)
        finally:
            parents.current = None

    def backend(self: Any, *args: Any, **kwargs: Any) -> Any:
        child = start_backend(self, *args, **kwargs)
        parent = getattr(parents, "current", None)
        if parent:
            child.blocks.update(self.snapshots[parent].blocks)
        return child

    monkeypatch.setattr(EBSResponse, "start_snapshot", response)
    monkeypatch.setattr(EbsDirectBackend, "start_snapshot", backend)


class Recorder:
    """moto's request recorder: what the server actually received."""

    def __init__(self, url: str) -> None:
        self.url = url

    def start(self) -> None:
        requests.post(f"{self.url}/moto-api/recorder/reset-recording", timeout=30)
        requests.post(f"{self.url}/moto-api/recorder/start-recording", timeout=30)

    def stop(self) -> None:
        requests.post(f"{self.url}/moto-api/recorder/stop-recording", timeout=30)

    def ec2_calls(self, action: str) -> list[dict[str, str]]:
        """Form parameters of every recorded EC2 call named ``action``."""
        text = requests.get(f"{self.url}/moto-api/recorder/download-recording", timeout=30).text
        calls = []
        for line in text.splitlines():
            entry = json.loads(line)
            body = entry.get("body") or ""
            if entry.get("body_encoded"):
                body = base64.b64decode(body).decode("utf-8", "replace")
            params = {k: v[0] for k, v in parse_qs(body).items()}
            if params.get("Action") == action:
                calls.append(params)
        return calls


@pytest.fixture
def recorder(moto_url: str) -> Iterator[Recorder]:
    rec = Recorder(moto_url)
    yield rec
    rec.stop()
