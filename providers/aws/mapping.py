"""Network and storage mapping from a Coriolis ``destination_environment``.

``network_map`` maps a source network name to a subnet (id or ``Name`` tag), or to
``{"subnet_id": .., "security_group_ids": [..]}``. ``storage_mappings`` follows Coriolis:
``{"default": type, "backend_mappings": [{"source", "destination"}],
"disk_mappings": [{"disk_id", "destination"}]}`` with EBS volume types as destinations.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from core.errors import InvalidInput, NotFound
from core.models import DiskInfo, InstanceInfo
from providers.aws.errors import Secrets, aws_errors

VOLUME_TYPES = ("gp3", "gp2", "io2", "io1", "st1", "sc1", "standard")
DEFAULT_VOLUME_TYPE = "gp3"


@dataclass
class NicPlan:
    """Where one NIC of the instance goes."""

    network: str
    subnet_id: str
    security_group_ids: list[str] = field(default_factory=list)
    vpc_id: str | None = None
    availability_zone: str | None = None


def _entry(value: Any, network: str) -> tuple[str, list[str]]:
    if isinstance(value, str) and value:
        return value, []
    if isinstance(value, Mapping) and value.get("subnet_id"):
        groups = value.get("security_group_ids") or []
        if isinstance(groups, str):
            groups = [groups]
        return str(value["subnet_id"]), [str(g) for g in groups]
    raise InvalidInput(
        f"network_map entry for network {network!r} must be a subnet id or {{'subnet_id': ..}}"
    )


def _find_subnet(ec2: Any, ref: str, network: str, secrets: Secrets) -> dict[str, Any]:
    action = f"looking up subnet {ref!r} (network_map for {network!r})"
    try:
        with aws_errors(action, secrets):
            if ref.startswith("subnet-"):
                found = ec2.describe_subnets(SubnetIds=[ref])["Subnets"]
            else:
                found = ec2.describe_subnets(Filters=[{"Name": "tag:Name", "Values": [ref]}])["Subnets"]
    except (NotFound, InvalidInput):
        found = []
    if not found:
        raise NotFound(f"subnet {ref!r} (network_map for network {network!r}) was not found")
    if len(found) > 1:
        raise InvalidInput(f"subnet name {ref!r} (network_map for network {network!r}) is ambiguous")
    return dict(found[0])


def _check_groups(
    ec2: Any, groups: list[str], subnet: dict[str, Any], network: str, secrets: Secrets
) -> None:
    if not groups:
        return
    try:
        with aws_errors(f"looking up security groups {groups}", secrets):
            found = ec2.describe_security_groups(GroupIds=groups)["SecurityGroups"]
    except (NotFound, InvalidInput):
        found = []
    missing = sorted(set(groups) - {g["GroupId"] for g in found})
    if missing:
        raise NotFound(
            f"security group(s) {', '.join(missing)} (network_map for network {network!r}) not found"
        )
    other = sorted(g["GroupId"] for g in found if g.get("VpcId") != subnet.get("VpcId"))
    if other:
        raise InvalidInput(
            f"security group(s) {', '.join(other)} are not in {subnet.get('VpcId')}, "
            f"the VPC of subnet {subnet['SubnetId']}"
        )


def plan_nics(
    ec2: Any, env: Mapping[str, Any], network_map: Mapping[str, Any], export_info: InstanceInfo,
    secrets: Secrets = (),
) -> list[NicPlan]:
    """One ``NicPlan`` per source NIC (at least one), checked against EC2."""
    if not isinstance(network_map, Mapping):
        raise InvalidInput("network_map must be an object")
    networks = [nic.network_name for nic in export_info.devices.nics]
    if not networks:
        # An instance without NICs still needs a subnet to launch in.
        if not network_map:
            raise InvalidInput("network_map is empty: AWS instances need a subnet")
        networks = [next(iter(network_map))]
    plans: list[NicPlan] = []
    for network in networks:
        if network in network_map:
            value = network_map[network]
        elif "default" in network_map:
            value = network_map["default"]
        else:
            raise InvalidInput(
                f"network {network!r} of instance {export_info.name!r} has no entry in network_map"
            )
        ref, groups = _entry(value, network)
        subnet = _find_subnet(ec2, ref, network, secrets)
        groups = groups or [str(g) for g in env.get("security_group_ids") or []]
        _check_groups(ec2, groups, subnet, network, secrets)
        plans.append(
            NicPlan(network, subnet["SubnetId"], groups, subnet.get("VpcId"), subnet.get("AvailabilityZone"))
        )
    zones = {p.availability_zone for p in plans}
    if len(zones) > 1:
        raise InvalidInput(
            f"all mapped subnets must be in one availability zone, got {sorted(map(str, zones))}"
        )
    return plans


def volume_params(env: Mapping[str, Any], volume_type: str) -> dict[str, Any]:
    """Extra EBS parameters a volume type needs: io1/io2 can't be created without ``Iops``."""
    if volume_type in ("io1", "io2"):
        return {"Iops": int(env.get("iops") or 3000)}
    return {}


def volume_type_for(env: Mapping[str, Any], mappings: Mapping[str, Any], disk: DiskInfo | None) -> str:
    """The EBS volume type for one disk according to ``storage_mappings`` (``mappings``)."""
    chosen = None
    if disk is not None:
        for item in mappings.get("disk_mappings") or []:
            if item.get("disk_id") == disk.id:
                chosen = item.get("destination")
                break
        if chosen is None and disk.storage_backend_identifier:
            for item in mappings.get("backend_mappings") or []:
                if item.get("source") == disk.storage_backend_identifier:
                    chosen = item.get("destination")
                    break
    chosen = chosen or mappings.get("default") or env.get("volume_type") or DEFAULT_VOLUME_TYPE
    if chosen not in VOLUME_TYPES:
        raise InvalidInput(f"unknown EBS volume type {chosen!r}; use one of {', '.join(VOLUME_TYPES)}")
    return str(chosen)
