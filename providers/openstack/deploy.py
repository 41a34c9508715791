"""Destination control path: the server with the mapped flavor, networks and security groups
(optionally booting from volumes Nova makes from the images), waited for, and its boot check.

The server carries the migration id in its metadata, so a retried deploy finds the server of
its first attempt instead of creating a second one.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from core.errors import InvalidInput, ProviderError
from core.models import DeployedInstance, ImportedDisk, InstanceInfo
from core.polling import poll_until
from providers.base import ActionContext
from providers.openstack import options
from providers.openstack import tags as t
from providers.openstack.cloud import Cloud
from providers.openstack.instances import GiB, servers

#: console lines that show userspace came up
BOOT_MARKERS = ("login:", "Reached target Multi-User", "Cloud-init v.", "cloud-init")


def instance_name(action: ActionContext, export_info: InstanceInfo) -> str:
    return str(action.instance_name or export_info.name)


def choose_flavor(cloud: Cloud, env: Mapping[str, Any], info: InstanceInfo, disk_gb: int) -> dict[str, Any]:
    flavors = options.flavors(cloud)
    wanted = env.get("flavor_name")
    if wanted:
        found = next((f for f in flavors if wanted in (f["name"], f["id"])), None)
        if found is None:
            raise InvalidInput(f"Unknown flavor '{wanted}'. Known: {', '.join(f['name'] for f in flavors)}")
        return found
    need_disk = 0 if env.get("boot_from_volume") else disk_gb
    fits = [f for f in flavors if f["vcpus"] >= info.num_cpu and f["ram"] >= info.memory_mb
            and (f.get("disk") or 0) >= need_disk]
    if not fits:
        raise InvalidInput(f"No flavor has {info.num_cpu} vCPU, {info.memory_mb} MiB and {need_disk} GiB; "
                           "set flavor_name")
    return min(fits, key=lambda f: (f["vcpus"], f["ram"], f.get("disk") or 0))


def map_networks(cloud: Cloud, network_map: Mapping[str, Any], info: InstanceInfo) -> list[dict[str, str]]:
    nets = cloud.request("network", "GET", "/v2.0/networks")["networks"]
    by_key = {n["id"]: n for n in nets} | {n["name"]: n for n in nets if n.get("name")}
    wanted = [network_map.get(nic.network_name, nic.network_name) for nic in info.devices.nics]
    if not wanted and network_map:
        wanted = list(dict.fromkeys(network_map.values()))
    out = []
    for mapped in wanted:
        # Coriolis also allows {"id": ...} as a network_map value
        target = mapped.get("id") or mapped.get("name") if isinstance(mapped, dict) else mapped
        net = by_key.get(str(target))
        if net is None:
            raise InvalidInput(f"Destination network '{target}' does not exist; map it in network_map "
                               f"(known: {', '.join(sorted(n.get('name') or n['id'] for n in nets))})")
        out.append({"uuid": net["id"]})
    return out


def security_groups(cloud: Cloud, env: Mapping[str, Any]) -> list[dict[str, str]]:
    names = list(env.get("security_groups") or [])
    if names:
        groups = options.security_groups(cloud)
        known = {g["name"] for g in groups} | {g["id"] for g in groups}
        unknown = [n for n in names if n not in known]
        if unknown:
            raise InvalidInput(f"Unknown security group(s): {', '.join(unknown)}")
    return [{"name": n} for n in names]


def validate_destination(cloud: Cloud, env: Mapping[str, Any], export_info: InstanceInfo,
                         action: ActionContext) -> None:
    cloud.endpoint("image")
    cloud.endpoint("compute")
    disk_gb = max(1, -(-sum(d.size_bytes for d in export_info.devices.disks) // GiB))
    choose_flavor(cloud, env, export_info, disk_gb)
    map_networks(cloud, action.network_map, export_info)
    security_groups(cloud, env)
    if action.replica_only:
        # A transfer execution deploys nothing: a server of that name (an earlier deployment of this
        # transfer, a test failover) is its deployment's concern (deploy_instance).
        return
    name = instance_name(action, export_info)
    for s in servers(cloud):
        if s["name"] == name and t.server_migration(s) != action.action_id:
            raise InvalidInput(f"A server named '{name}' already exists at the destination")


def _gib(disk: ImportedDisk) -> int:
    return max(1, -(-int(disk.details.get("virtual_size") or GiB) // GiB))


def _block_devices(env: Mapping[str, Any], disks: list[ImportedDisk], disk_gb: int) -> list[dict[str, Any]]:
    if env.get("boot_from_volume"):
        size_gb = int(env.get("volume_size_gb") or disk_gb)
        return [{"boot_index": i if i == 0 else -1, "uuid": d.details["image_id"], "source_type": "image",
                 "destination_type": "volume", "delete_on_termination": True,
                 "volume_size": size_gb if i == 0 else _gib(d)}
                for i, d in enumerate(disks)]
    if len(disks) < 2:
        return []
    return [{"boot_index": 0, "uuid": disks[0].details["image_id"], "source_type": "image",
             "destination_type": "local", "delete_on_termination": True},
            *({"boot_index": -1, "uuid": d.details["image_id"], "source_type": "image",
               "destination_type": "volume", "delete_on_termination": True, "volume_size": _gib(d)}
              for d in disks[1:])]


def deploy_instance(cloud: Cloud, env: Mapping[str, Any], export_info: InstanceInfo,
                    disks: list[ImportedDisk], action: ActionContext) -> DeployedInstance:
    if not disks:
        raise InvalidInput("Nothing to boot: no disk was imported")
    name = instance_name(action, export_info)
    disk_gb = _gib(disks[0])
    flavor = choose_flavor(cloud, env, export_info, disk_gb)
    networks = map_networks(cloud, action.network_map, export_info)
    groups = security_groups(cloud, env)
    migration_id = t.migration_id(action)
    named = [s for s in servers(cloud) if s["name"] == name]
    existing = next((s for s in named if t.server_migration(s) == migration_id), None)
    if existing is not None:  # a retried deploy finds the server of its first attempt
        server_id = existing["id"]
    elif named:
        # Nova allows the name twice; a migration refuses it (validate_destination), a deployment here.
        raise InvalidInput(f"A server named '{name}' already exists at the destination")
    else:
        body: dict[str, Any] = {
            "name": name, "flavorRef": flavor["id"], "networks": networks or "none",
            "metadata": {t.MIGRATION_KEY: migration_id, t.SOURCE_KEY: export_info.name[:255],
                         "migrated_from": export_info.id},
        }
        if groups:
            body["security_groups"] = groups
        if env.get("keypair_name"):
            body["key_name"] = env["keypair_name"]
        if env.get("availability_zone"):
            body["availability_zone"] = env["availability_zone"]
        if not env.get("boot_from_volume"):
            body["imageRef"] = disks[0].details["image_id"]
        mapping = _block_devices(env, disks, disk_gb)
        if mapping:
            body["block_device_mapping_v2"] = mapping
        server_id = cloud.request("compute", "POST", "/servers", json={"server": body})["server"]["id"]
    server = cloud.wait(f"server {name}", lambda: cloud.request(
        "compute", "GET", f"/servers/{server_id}")["server"], {"active"}, {"error"},
        float(env.get("boot_timeout", 600)))
    return DeployedInstance(instance=export_info.name, id=server_id, name=name, details={
        "flavor": flavor["name"], "flavor_id": flavor["id"], "networks": [n["uuid"] for n in networks],
        "security_groups": [g["name"] for g in groups], "status": server.get("status"),
        "boot_from_volume": bool(env.get("boot_from_volume")),
        "disks": [d.details for d in disks]})


def verify_boot(cloud: Cloud, deployed: DeployedInstance, timeout: float) -> list[str]:
    def booted() -> list[str] | None:
        out = cloud.request("compute", "POST", f"/servers/{deployed.id}/action",
                            json={"os-getConsoleOutput": {"length": 200}})
        lines = [line for line in str(out.get("output") or "").splitlines() if line.strip()]
        hits = [line.strip() for line in lines if any(m in line for m in BOOT_MARKERS)]
        return [f"console of server {deployed.id}: {line}" for line in hits[-3:]] if hits else None

    evidence = poll_until(time.monotonic() + timeout, 5, booted)
    if evidence is None:
        raise ProviderError(f"Server {deployed.id} showed no sign of a booted guest on its console "
                            f"within {timeout:.0f}s")
    return evidence
