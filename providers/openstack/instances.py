"""Inventory: Nova servers, and Glance images as templates."""

from __future__ import annotations

from typing import Any

from core.errors import NotFound
from core.models import Devices, DiskInfo, InstanceInfo, NicInfo
from providers.openstack.cloud import Cloud

GiB = 1024**3


def servers(cloud: Cloud) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = cloud.request("compute", "GET", "/servers/detail")["servers"]
    return found


def server_info(server: dict[str, Any]) -> InstanceInfo:
    flavor = server.get("flavor") or {}
    nics = [NicInfo(network_name=net, mac_address=a.get("OS-EXT-IPS-MAC:mac_addr", ""),
                    ip_addresses=[a["addr"]] if a.get("addr") else [])
            for net, addrs in (server.get("addresses") or {}).items() for a in addrs]
    disk = DiskInfo(id="root", size_bytes=int(flavor.get("disk") or 1) * GiB, format="raw")
    return InstanceInfo(id=server["id"], name=server["name"], instance_name=server["name"],
                        num_cpu=int(flavor.get("vcpus") or 1), memory_mb=int(flavor.get("ram") or 512),
                        flavor_name=flavor.get("original_name"), power_state=server.get("status"),
                        devices=Devices(disks=[disk], nics=nics))


def image_info(image: dict[str, Any]) -> InstanceInfo:
    size = int(image.get("virtual_size") or image.get("size") or 0)
    return InstanceInfo(
        id=image["id"], name=image.get("name") or image["id"], instance_name=image.get("name"),
        num_cpu=int(image.get("sterna_num_cpu") or 1), memory_mb=int(image.get("min_ram") or 512) or 512,
        power_state="template",
        devices=Devices(disks=[DiskInfo(id="root", size_bytes=size, format=image.get("disk_format") or "raw")]))


def list_instances(cloud: Cloud, name_filter: str | None = None) -> list[InstanceInfo]:
    found = [server_info(s) for s in servers(cloud)]
    if name_filter:
        found = [i for i in found if name_filter.lower() in i.name.lower()]
    return found


def find_server(cloud: Cloud, instance: str) -> dict[str, Any] | None:
    found = servers(cloud)
    return next((s for s in found if s["id"] == instance), None) or next(
        (s for s in found if s["name"] == instance), None)


def find_image(cloud: Cloud, instance: str) -> dict[str, Any] | None:
    images = cloud.request("image", "GET", "/v2/images?limit=1000")["images"]
    return next((i for i in images if i["id"] == instance), None) or next(
        (i for i in images if i.get("name") == instance), None)


def get_instance(cloud: Cloud, instance: str) -> InstanceInfo:
    server = find_server(cloud, instance)
    if server is not None:
        return server_info(server)
    image = find_image(cloud, instance)  # templates are images
    if image is not None:
        return image_info(image)
    raise NotFound(f"No server or image named '{instance}' in this OpenStack project")
