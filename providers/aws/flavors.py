"""Instance-type mapping: an explicit ``flavor_name``, or the smallest type that fits."""

from __future__ import annotations

import threading
from typing import Any

from core.errors import InvalidInput
from core.models import InstanceInfo
from providers.aws.errors import Secrets, aws_errors

_CACHE_LOCK = threading.Lock()
# Instance-type catalogues are large (hundreds of entries) and static per region.
_CATALOGUE: dict[tuple[str | None, str], list[dict[str, Any]]] = {}


def instance_types(
    ec2: Any, region: str, endpoint: str | None, secrets: Secrets = ()
) -> list[dict[str, Any]]:
    """All instance types offered in the region (cached per process)."""
    key = (endpoint, region)
    with _CACHE_LOCK:
        if key in _CATALOGUE:
            return _CATALOGUE[key]
    types: list[dict[str, Any]] = []
    with aws_errors("listing instance types", secrets):
        for page in ec2.get_paginator("describe_instance_types").paginate(PaginationConfig={"PageSize": 100}):
            types.extend(page["InstanceTypes"])
    with _CACHE_LOCK:
        _CATALOGUE[key] = types
    return types


def describe_type(ec2: Any, name: str, secrets: Secrets = ()) -> dict[str, Any]:
    """One instance type; ``InvalidInput`` naming it when the region doesn't offer it."""
    try:
        with aws_errors(f"looking up instance type {name!r}", secrets):
            found = ec2.describe_instance_types(InstanceTypes=[name])["InstanceTypes"]
    except InvalidInput:
        # AWS answers InvalidInstanceType; its message lists every type, too long to pass on.
        raise InvalidInput(f"instance type {name!r} is not offered in this region") from None
    if not found:
        raise InvalidInput(f"instance type {name!r} is not offered in this region")
    return dict(found[0])


def _vcpus(t: dict[str, Any]) -> int:
    return int(t.get("VCpuInfo", {}).get("DefaultVCpus", 0))


def _memory_mb(t: dict[str, Any]) -> int:
    return int(t.get("MemoryInfo", {}).get("SizeInMiB", 0))


def _boot_modes(t: dict[str, Any]) -> list[str]:
    # Types without the field predate UEFI support on EC2: legacy BIOS only.
    return list(t.get("SupportedBootModes") or ["legacy-bios"])


def suits(t: dict[str, Any], export_info: InstanceInfo, architecture: str) -> str | None:
    """Why type ``t`` can't host the instance (``None`` when it can)."""
    if architecture not in t.get("ProcessorInfo", {}).get("SupportedArchitectures", [architecture]):
        return f"it is not {architecture}"
    if "hvm" not in t.get("SupportedVirtualizationTypes", ["hvm"]):
        return "it does not run HVM guests"
    if export_info.firmware_type == "EFI" and "uefi" not in _boot_modes(t):
        return "it does not boot UEFI guests"
    return None


def smallest_fit(types: list[dict[str, Any]], export_info: InstanceInfo, architecture: str = "x86_64") -> str:
    """The smallest current-generation type with at least the instance's vCPUs and memory.

    "Smallest" is by memory, then vCPUs, then name, so the choice is deterministic; bare
    metal and previous-generation types are left out.
    """
    fits = [
        t
        for t in types
        if _vcpus(t) >= export_info.num_cpu
        and _memory_mb(t) >= export_info.memory_mb
        and t.get("CurrentGeneration", True)
        and not t.get("BareMetal", False)
        and suits(t, export_info, architecture) is None
    ]
    if not fits:
        raise InvalidInput(
            f"no {architecture} instance type has {export_info.num_cpu} vCPUs and "
            f"{export_info.memory_mb} MiB of memory; set 'flavor_name'"
        )
    best = min(fits, key=lambda t: (_memory_mb(t), _vcpus(t), t["InstanceType"]))
    return str(best["InstanceType"])
