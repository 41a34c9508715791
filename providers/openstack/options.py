"""Schemas, connection check and option listings: networks, storage, flavors, security groups."""

from __future__ import annotations

from typing import Any

from core.models import NetworkInfo, OptionValues, StorageBackend, StorageInfo
from providers.openstack.cloud import Cloud

_TEXT = {"type": "string"}

CONNECTION_INFO_SCHEMA: dict[str, Any] = {
    "$schema": "http://cloudbase.it/coriolis/schemas/openstack#",
    "type": "object",
    "description": "Empty for the caller's own cloud, a Barbican secret_ref, or credentials",
    "properties": {
        "auth_url": _TEXT, "username": _TEXT, "password": _TEXT, "project_name": _TEXT, "project_id": _TEXT,
        "user_domain_name": _TEXT, "user_domain_id": _TEXT, "project_domain_name": _TEXT,
        "project_domain_id": _TEXT, "region_name": _TEXT, "interface": _TEXT, "cafile": _TEXT,
        "allow_untrusted": {"type": "boolean"}, "secret_ref": _TEXT, "secret_id": _TEXT,
    },
}

DESTINATION_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "flavor_name": {"type": "string"},
        "network_map": {"type": "object", "description": "source network -> Neutron network name or id"},
        "security_groups": {"type": "array", "items": {"type": "string"}},
        "keypair_name": {"type": "string"},
        "availability_zone": {"type": "string"},
        "boot_from_volume": {"type": "boolean"},
        "volume_size_gb": {"type": "integer", "minimum": 1},
        "delete_images_after_boot": {"type": "boolean"},
        "verify_boot": {"type": "boolean"},
        "boot_timeout": {"type": "number"},
    },
}


def validate_connection(cloud: Cloud) -> None:
    cloud.token()
    for service in ("compute", "image"):
        cloud.endpoint(service)
    cloud.request("image", "GET", "/v2/images?limit=1")


def list_networks(cloud: Cloud) -> list[NetworkInfo]:
    nets = cloud.request("network", "GET", "/v2.0/networks")["networks"]
    return [NetworkInfo(id=n["id"], name=n.get("name") or n["id"]) for n in nets]


def list_storage(cloud: Cloud) -> StorageInfo:
    backends = [StorageBackend(id="glance", name="Glance image (boot from image)")]
    if cloud.has("volumev3"):
        types = cloud.request("volumev3", "GET", "/types")
        backends += [StorageBackend(id=t["id"], name=t["name"]) for t in types.get("volume_types", [])]
    return StorageInfo(storage_backends=backends, config_default="glance")


def flavors(cloud: Cloud) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = cloud.request("compute", "GET", "/flavors/detail")["flavors"]
    return found


def security_groups(cloud: Cloud) -> list[dict[str, Any]]:
    if not cloud.has("network"):
        return []
    groups: list[dict[str, Any]] = cloud.request("network", "GET", "/v2.0/security-groups")["security_groups"]
    return groups


def destination_options(cloud: Cloud) -> list[OptionValues]:
    return [
        OptionValues(name="flavor_name", values=[f["name"] for f in flavors(cloud)]),
        OptionValues(name="security_groups", values=sorted({g["name"] for g in security_groups(cloud)})),
        OptionValues(name="boot_from_volume", values=[False, True], config_default=False),
    ]


def source_options() -> list[OptionValues]:
    return [OptionValues(name="shutdown_instances", values=[False, True], config_default=False)]
