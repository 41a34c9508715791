"""Session fixtures for the Azure peers: Azurite and the fake ARM, fresh state per test."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.peers import free_port
from tests.peers.azure.azurite import Azurite, running_azurite
from tests.peers.azure.fake_arm import FakeArm, running_fake_arm

SUBSCRIPTION = "00000000-0000-4000-8000-00000000a5a5"
TENANT = "11111111-1111-4111-8111-111111111111"
CLIENT_ID = "22222222-2222-4222-8222-222222222222"
SECRET = "az-s3cr3t-value-never-shown"
LOCATION = "westeurope"
GROUP = "sterna-rg"
#: the tag each Sterna action puts on what it creates in Azure, with its own id (``providers.azure.tags``)
ACTION_TAG = "sterna-migration-id"


@pytest.fixture(scope="session")
def azurite(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Azurite]:
    with running_azurite(tmp_path_factory.mktemp("azurite"), free_port()) as peer:
        yield peer


@pytest.fixture(scope="session")
def fake_arm_server(azurite: Azurite, tmp_path_factory: pytest.TempPathFactory) -> Iterator[FakeArm]:
    with running_fake_arm(azurite, tmp_path_factory.mktemp("fake-arm")) as arm:
        yield arm


@dataclass
class AzureCloud:
    """The fake's state for one test: a subscription with a resource group, a VNet and an NSG."""

    arm: FakeArm
    conn: dict[str, Any]
    group_id: str
    vnet_id: str
    subnet_id: str
    nsg_id: str


@pytest.fixture
def azure_cloud(fake_arm_server: FakeArm) -> AzureCloud:
    fake_arm_server.reset()
    return seed_cloud(fake_arm_server)


def seed_cloud(arm: FakeArm) -> AzureCloud:
    """What a user has before migrating: a principal with a role, a resource group, a VNet, an NSG."""
    arm.add_principal(TENANT, CLIENT_ID, SECRET, SUBSCRIPTION)
    rg = arm.add_group(SUBSCRIPTION, GROUP, LOCATION)
    vnet = arm.put(f"{rg}/providers/Microsoft.Network/virtualNetworks/vnet1", {
        "type": "Microsoft.Network/virtualNetworks", "location": LOCATION,
        "properties": {"addressSpace": {"addressPrefixes": ["10.0.0.0/16"]}}})
    subnet = arm.put(f"{vnet['id']}/subnets/default", {
        "type": "Microsoft.Network/virtualNetworks/subnets", "properties": {"addressPrefix": "10.0.0.0/24"}})
    vnet["properties"]["subnets"] = [subnet]
    arm.put(vnet["id"], {k: v for k, v in vnet.items() if k not in ("id", "name")})
    nsg = arm.put(f"{rg}/providers/Microsoft.Network/networkSecurityGroups/web-nsg", {
        "type": "Microsoft.Network/networkSecurityGroups", "location": LOCATION, "properties": {}})
    conn = {
        "tenant_id": TENANT, "client_id": CLIENT_ID, "client_secret": SECRET,
        "subscription_id": SUBSCRIPTION, "location": LOCATION, "resource_group": GROUP,
        "arm_endpoint": arm.url, "authority_host": arm.url, "ca_bundle": arm.cert,
    }
    return AzureCloud(arm, conn, rg, vnet["id"], subnet["id"], nsg["id"])


def read_managed_disk(cloud: AzureCloud, disk_name: str, out: Path) -> int:
    """Download a managed disk into ``out`` through a read SAS granted by ARM (revoked after), as a user
    would; returns the bytes read (its allocated pages)."""
    from azure.identity import ClientSecretCredential
    from azure.mgmt.compute import ComputeManagementClient
    from azure.mgmt.compute import models as cm
    from azure.storage.blob import BlobClient

    c = cloud.conn
    cred = ClientSecretCredential(c["tenant_id"], c["client_id"], c["client_secret"], authority=cloud.arm.url,
                                  disable_instance_discovery=True, connection_verify=cloud.arm.cert)
    compute = ComputeManagementClient(cred, c["subscription_id"], base_url=cloud.arm.url,
                                      credential_scopes=[f"{cloud.arm.url}/.default"],
                                      connection_verify=cloud.arm.cert)
    grant = compute.disks.begin_grant_access(c["resource_group"], disk_name, cm.GrantAccessData(
        access="Read", duration_in_seconds=3600)).result()
    read = 0
    try:
        blob = BlobClient.from_blob_url(grant.access_sas)
        with open(out, "wb") as f:
            f.truncate(blob.get_blob_properties().size)
            for r in blob.get_page_ranges()[0]:
                start, length = int(r["start"]), int(r["end"]) + 1 - int(r["start"])
                f.seek(start)
                blob.download_blob(offset=start, length=length).readinto(f)
                read += length
    finally:
        compute.disks.begin_revoke_access(c["resource_group"], disk_name).result()
    return read


def tagged(cloud: AzureCloud, rtype: str, action_ids: Iterable[str]) -> list[dict[str, Any]]:
    """The resources of ``rtype`` that one of ``action_ids`` made: each action tags what it creates with
    its own id, so a migration on transfers finds its VM, NICs and disks under its deployment's id
    (``tests.leftovers.deployments_of``), a one-shot migration under its own."""
    ids = set(action_ids)
    return [r for r in cloud.arm.of_type(rtype) if r.get("tags", {}).get(ACTION_TAG) in ids]
