"""Inventory and option listings: regions, subnets, security groups, instance types, volume types."""

from __future__ import annotations

from typing import Any

from core.errors import InvalidInput
from core.models import NetworkInfo, OptionValues, StorageBackend, StorageInfo
from providers.aws import flavors
from providers.aws.errors import aws_errors
from providers.aws.mapping import DEFAULT_VOLUME_TYPE, VOLUME_TYPES
from providers.aws.session import AwsClients
from providers.aws.tags import as_dict

# DescribeRegions is asked in a region the partition surely has, because an unknown
# region has no endpoint to ask (real AWS: DNS failure; moto: HTTP 500).
_PARTITION_PROBE = {"cn-": "cn-north-1", "us-gov-": "us-gov-west-1", "us-iso-": "us-iso-east-1"}


def probe_region(region: str) -> str:
    for prefix, probe in _PARTITION_PROBE.items():
        if region.startswith(prefix):
            return probe
    return "us-east-1"


def regions(clients: AwsClients) -> dict[str, str]:
    """Region name -> opt-in status, as the account sees them (also checks the credentials)."""
    conn = clients.conn
    probe = clients.in_region(probe_region(clients.region))
    with aws_errors(f"listing regions (checking the credentials) via {probe.region}", conn.secrets):
        found = probe.ec2.describe_regions(AllRegions=True)["Regions"]
    return {r["RegionName"]: r.get("OptInStatus", "opt-in-not-required") for r in found}


def validate_connection(clients: AwsClients) -> None:
    """Credentials work, the region exists and is enabled, and EC2 answers in it."""
    conn = clients.conn
    known = regions(clients)
    if clients.region not in known:
        raise InvalidInput(f"unknown AWS region {clients.region!r}")
    if known[clients.region] == "not-opted-in":
        raise InvalidInput(f"AWS region {clients.region!r} is not enabled for this account")
    with aws_errors(f"reaching EC2 in {clients.region}", conn.secrets):
        clients.ec2.describe_availability_zones()


def _subnets(clients: AwsClients) -> list[dict[str, Any]]:
    subnets: list[dict[str, Any]] = []
    with aws_errors("listing subnets", clients.conn.secrets):
        for page in clients.ec2.get_paginator("describe_subnets").paginate():
            subnets.extend(page["Subnets"])
    return sorted(subnets, key=lambda s: s["SubnetId"])


def list_networks(clients: AwsClients) -> list[NetworkInfo]:
    """Subnets: the things a NIC attaches to (named by their ``Name`` tag when they have one)."""
    return [
        NetworkInfo(id=s["SubnetId"], name=as_dict(s.get("Tags")).get("Name") or s["SubnetId"])
        for s in _subnets(clients)
    ]


def list_storage() -> StorageInfo:
    """EBS volume types."""
    return StorageInfo(
        storage_backends=[StorageBackend(id=v, name=v) for v in VOLUME_TYPES],
        config_default=DEFAULT_VOLUME_TYPE,
    )


def _security_groups(clients: AwsClients) -> list[dict[str, str]]:
    groups: list[dict[str, str]] = []
    with aws_errors("listing security groups", clients.conn.secrets):
        for page in clients.ec2.get_paginator("describe_security_groups").paginate():
            for g in page["SecurityGroups"]:
                groups.append(
                    {"id": g["GroupId"], "name": f"{g.get('GroupName', '')} ({g.get('VpcId', '')})"}
                )
    return sorted(groups, key=lambda g: g["id"])


def options(clients: AwsClients, destination: bool) -> list[OptionValues]:
    """Coriolis option listings for the destination (or source) environment."""
    conn, secrets = clients.conn, clients.conn.secrets
    region_names = sorted(n for n, s in regions(clients).items() if s != "not-opted-in")
    subnets = [
        {
            "id": s["SubnetId"],
            "name": f"{as_dict(s.get('Tags')).get('Name', s['SubnetId'])} "
            f"({s.get('CidrBlock', '')}, {s.get('AvailabilityZone', '')})",
        }
        for s in _subnets(clients)
    ]
    types = sorted(
        t["InstanceType"]
        for t in flavors.instance_types(clients.ec2, clients.region, conn.endpoint_for("ec2"), secrets)
    )
    result = [
        OptionValues(name="region", values=region_names, config_default=clients.region),
        OptionValues(name="subnet_id", values=subnets),
        OptionValues(name="security_group_ids", values=_security_groups(clients)),
        OptionValues(name="flavor_name" if destination else "instance_type", values=types),
        OptionValues(name="volume_type", values=list(VOLUME_TYPES), config_default=DEFAULT_VOLUME_TYPE),
    ]
    if destination:
        with aws_errors("listing key pairs", secrets):
            pairs = sorted(k["KeyName"] for k in clients.ec2.describe_key_pairs().get("KeyPairs", []))
        result.append(OptionValues(name="keypair_name", values=pairs))
    else:
        result.append(OptionValues(name="shutdown_instance", values=[False, True], config_default=False))
    return result
