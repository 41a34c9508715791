"""Two of ``guest_runs``'s migrations: the cloud-init Debian guest -> Azure and -> GCP, morphed.

Each is a TCG morph (the initramfs rebuilt in the libguestfs appliance), then an upload into the
destination's peer: a managed disk in Azurite through the in-repo ARM fake, a tar.gz object in the
GCS emulator imported by the in-repo GCE fake. Their tests read the disk back from there and boot it.

The accounts are this fixture's own, for the same reason as the AWS run's: the per-test
``azure_cloud`` fixture resets the shared ARM fake, so the Azure run gets an ARM fake of its own
(on the shared Azurite); the GCE fake has no reset, so a project of its own is enough.

Started with the others by ``guest_runs``; ``STERNA_GUEST_RUNS=azure,gcp`` (see there) starts these two
alone, without the simulator, the other guests or the background guest builds.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import pytest

from client.sdk import SternaClient
from devstack.sample import create_vmware_vm
from tests.conftest import RunningStack
from tests.guests.debian import exports
from tests.peers.azure.azurite import Azurite
from tests.peers.azure.fake_arm import FakeArm, running_fake_arm
from tests.peers.azure.fixtures import AzureCloud, seed_cloud
from tests.peers.gce import FakeComputeEngine
from tests.peers.gcp import new_project

CLOUD_RUNS = ("azure", "gcp")


@dataclass
class GcpProject:
    gce: FakeComputeEngine
    gcs_url: str
    conn: dict[str, Any]


@dataclass
class CloudAccounts:
    """Where the Azure and GCP runs go, and what their tests inspect."""

    azure: AzureCloud
    gcp: GcpProject


@pytest.fixture(scope="session")
def cloud_accounts(azurite: Azurite, gce: FakeComputeEngine, gcs_url: str,
                   tmp_path_factory: pytest.TempPathFactory) -> Iterator[CloudAccounts]:
    arm: FakeArm
    with running_fake_arm(azurite, tmp_path_factory.mktemp("guest-runs-arm")) as arm:
        yield CloudAccounts(seed_cloud(arm), GcpProject(gce, gcs_url, new_project(gce, gcs_url)))


def cloud_init_source(stack: RunningStack, api: SternaClient) -> str:
    """The cloud-init guest as a VMware export, for the cloud runs started alone; its endpoint id."""
    src = stack.inventory("vmware-export-cloud-init-alone")
    create_vmware_vm(src, "debian-vm", vmdk=exports("cloud-init")["disk"])
    return str(api.create_endpoint("vmware-export-ci-alone", "local", {"path": str(src)})["id"])


def start_cloud_runs(api: SternaClient, origin: str, clouds: CloudAccounts, runs: set[str] | tuple[str, ...],
                     ) -> dict[str, str]:
    """Start the named cloud runs from the endpoint ``origin`` (the cloud-init guest); migration ids by run."""
    ids: dict[str, str] = {}
    if "azure" in runs:
        az = clouds.azure
        dest = api.create_endpoint("azure-guest", "azure", az.conn)
        ids["azure"] = api.create_migration(
            origin_endpoint_id=origin, destination_endpoint_id=dest["id"], instances=["debian-vm"],
            skip_os_morphing=False,
            destination_environment={"vm_size": "Standard_D2s_v3", "network_security_group_id": az.nsg_id},
            network_map={"VM Network": az.subnet_id})["id"]
    if "gcp" in runs:
        dest = api.create_endpoint("gcp-guest", "gcp", clouds.gcp.conn)
        ids["gcp"] = api.create_migration(
            origin_endpoint_id=origin, destination_endpoint_id=dest["id"], instances=["debian-vm"],
            skip_os_morphing=False,
            # kept, so that the test reads back what GCE imported: the image's tar.gz object
            destination_environment={"machine_type": "e2-medium", "keep_image": True, "keep_tarball": True},
            network_map={"VM Network": "app"})["id"]
    return ids


def timings(final: dict[str, Any]) -> str:
    """How long a finished run took, from the API's own record: in all, and its tasks by type."""

    def at(stamp: str) -> datetime:
        return datetime.fromisoformat(stamp)

    start = at(final["created_at"])
    end = max(at(t["updated_at"]) for t in final["tasks"])
    spans = []
    for t in final["tasks"]:
        stamps = [at(e["created_at"]) for e in t["events"] + t["progress_updates"]]
        if len(stamps) > 1:
            spans.append(f"{t['task_type']} {(max(stamps) - min(stamps)).total_seconds():.0f} s")
    return f"{(end - start).total_seconds():.0f} s in all (first to last event: {', '.join(spans)})"
