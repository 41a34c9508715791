"""The ``openstack`` provider: Nova servers and Glance images, as source and destination.

connection_info, one of:

* ``{}`` — the "same cloud": the caller's own Keystone (the migration's trust). This is the
  seed's "no further authentication";
* ``{"secret_ref": "<barbican href>"}`` or ``{"secret_id": "<uuid>"}`` — resolved by the
  activity into the JSON below;
* ``{"auth_url", "username", "password", "project_name" | "project_id", "user_domain_name" |
  "user_domain_id", "project_domain_name" | "project_domain_id", "region_name", "interface",
  "allow_untrusted", "cafile"}``.

Source: a server is exported through a Nova ``createImage`` snapshot that is downloaded from
Glance into the worker's scratch (templates are images: an image name or id is exported as it
is). Destination: each converted qcow2 disk is streamed into a Glance image and checked against
Glance's checksum; the server is created with the mapped flavor, networks and security groups
(optionally booting from a volume that Nova makes from the image), waited for until ACTIVE,
and its console log is checked.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from core.errors import InvalidInput, NotFound, ProviderError
from core.models import (
    DeployedInstance,
    Devices,
    DiskInfo,
    DiskLocator,
    ImportedDisk,
    InstanceInfo,
    NetworkInfo,
    NicInfo,
    OptionValues,
    SourceSnapshot,
    StorageBackend,
    StorageInfo,
)
from diskio.base import DiskSource
from providers.base import (
    NO_ACTION,
    ActionContext,
    BootVerifier,
    DestinationOptionsProvider,
    EndpointProvider,
    ExportProvider,
    ImportProvider,
    NetworksProvider,
    SourceOptionsProvider,
    StorageProvider,
    TransferContext,
    TransferProgress,
)
from providers.openstack import glance
from providers.openstack.cloud import Cloud

GiB = 1024**3
#: console lines that show userspace came up
BOOT_MARKERS = ("login:", "Reached target Multi-User", "Cloud-init v.", "cloud-init")


class OpenStackProvider(
    EndpointProvider, ExportProvider, ImportProvider, NetworksProvider, StorageProvider,
    DestinationOptionsProvider, SourceOptionsProvider, BootVerifier,
):
    PLUGIN_NAME = "openstack"
    TARGET_DISK_FORMAT = "qcow2"
    TARGET_PLATFORM = "kvm"
    WINDOWS_TARGET = "openstack"

    def __init__(self, connection_info: Mapping[str, Any]) -> None:
        super().__init__(connection_info)
        self._cloud: Cloud | None = None

    @property
    def cloud(self) -> Cloud:
        if self._cloud is None:
            self._cloud = Cloud(self.connection_info)
        return self._cloud

    @classmethod
    def connection_info_schema(cls) -> dict[str, Any]:
        text = {"type": "string"}
        return {
            "$schema": "http://cloudbase.it/coriolis/schemas/openstack#",
            "type": "object",
            "description": "Empty for the caller's own cloud, a Barbican secret_ref, or credentials",
            "properties": {
                "auth_url": text, "username": text, "password": text, "project_name": text, "project_id": text,
                "user_domain_name": text, "user_domain_id": text, "project_domain_name": text,
                "project_domain_id": text, "region_name": text, "interface": text, "cafile": text,
                "allow_untrusted": {"type": "boolean"}, "secret_ref": text, "secret_id": text,
            },
        }

    @classmethod
    def destination_environment_schema(cls) -> dict[str, Any]:
        return {
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

    # -- endpoint ----------------------------------------------------------------------------------
    def validate_connection(self) -> None:
        self.cloud.token()
        for service in ("compute", "image"):
            self.cloud.endpoint(service)
        self.cloud.request("image", "GET", "/v2/images?limit=1")

    def list_networks(self, env: Mapping[str, Any]) -> list[NetworkInfo]:
        nets = self.cloud.request("network", "GET", "/v2.0/networks")["networks"]
        return [NetworkInfo(id=n["id"], name=n.get("name") or n["id"]) for n in nets]

    def list_storage(self, env: Mapping[str, Any]) -> StorageInfo:
        backends = [StorageBackend(id="glance", name="Glance image (boot from image)")]
        if self.cloud.has("volumev3"):
            types = self.cloud.request("volumev3", "GET", "/types")
            backends += [StorageBackend(id=t["id"], name=t["name"]) for t in types.get("volume_types", [])]
        return StorageInfo(storage_backends=backends, config_default="glance")

    def _flavors(self) -> list[dict[str, Any]]:
        flavors: list[dict[str, Any]] = self.cloud.request("compute", "GET", "/flavors/detail")["flavors"]
        return flavors

    def _security_groups(self) -> list[dict[str, Any]]:
        if not self.cloud.has("network"):
            return []
        groups: list[dict[str, Any]] = self.cloud.request("network", "GET", "/v2.0/security-groups")[
            "security_groups"]
        return groups

    def destination_options(self, env: Mapping[str, Any]) -> list[OptionValues]:
        return [
            OptionValues(name="flavor_name", values=[f["name"] for f in self._flavors()]),
            OptionValues(name="security_groups", values=sorted({g["name"] for g in self._security_groups()})),
            OptionValues(name="boot_from_volume", values=[False, True], config_default=False),
        ]

    def source_options(self, env: Mapping[str, Any]) -> list[OptionValues]:
        return [OptionValues(name="shutdown_instances", values=[False, True], config_default=False)]

    # -- inventory ---------------------------------------------------------------------------------
    def _servers(self) -> list[dict[str, Any]]:
        servers: list[dict[str, Any]] = self.cloud.request("compute", "GET", "/servers/detail")["servers"]
        return servers

    def _info(self, server: dict[str, Any]) -> InstanceInfo:
        flavor = server.get("flavor") or {}
        nics = [NicInfo(network_name=net, mac_address=a.get("OS-EXT-IPS-MAC:mac_addr", ""),
                        ip_addresses=[a["addr"]] if a.get("addr") else [])
                for net, addrs in (server.get("addresses") or {}).items() for a in addrs]
        disk = DiskInfo(id="root", size_bytes=int(flavor.get("disk") or 1) * GiB, format="raw")
        return InstanceInfo(id=server["id"], name=server["name"], instance_name=server["name"],
                            num_cpu=int(flavor.get("vcpus") or 1), memory_mb=int(flavor.get("ram") or 512),
                            flavor_name=flavor.get("original_name"), power_state=server.get("status"),
                            devices=Devices(disks=[disk], nics=nics))

    def _image_info(self, image: dict[str, Any]) -> InstanceInfo:
        size = int(image.get("virtual_size") or image.get("size") or 0)
        return InstanceInfo(
            id=image["id"], name=image.get("name") or image["id"], instance_name=image.get("name"),
            num_cpu=int(image.get("sterna_num_cpu") or 1), memory_mb=int(image.get("min_ram") or 512) or 512,
            power_state="template",
            devices=Devices(disks=[DiskInfo(id="root", size_bytes=size, format=image.get("disk_format") or "raw")]))

    def list_instances(self, env: Mapping[str, Any], name_filter: str | None = None) -> list[InstanceInfo]:
        found = [self._info(s) for s in self._servers()]
        if name_filter:
            found = [i for i in found if name_filter.lower() in i.name.lower()]
        return found

    def _find_server(self, instance: str) -> dict[str, Any] | None:
        servers = self._servers()
        return next((s for s in servers if s["id"] == instance), None) or next(
            (s for s in servers if s["name"] == instance), None)

    def _find_image(self, instance: str) -> dict[str, Any] | None:
        images = self.cloud.request("image", "GET", "/v2/images?limit=1000")["images"]
        return next((i for i in images if i["id"] == instance), None) or next(
            (i for i in images if i.get("name") == instance), None)

    def get_instance(self, env: Mapping[str, Any], instance: str) -> InstanceInfo:
        server = self._find_server(instance)
        if server is not None:
            return self._info(server)
        image = self._find_image(instance)  # templates are images
        if image is not None:
            return self._image_info(image)
        raise NotFound(f"No server or image named '{instance}' in this OpenStack project")

    # -- source ------------------------------------------------------------------------------------
    def shutdown_instance(self, env: Mapping[str, Any], instance: str) -> None:
        server = self._find_server(instance)
        if server is None or server.get("status") == "SHUTOFF":
            return
        self.cloud.request("compute", "POST", f"/servers/{server['id']}/action", json={"os-stop": None})
        self.cloud.wait(f"server {instance}", lambda: self.cloud.request(
            "compute", "GET", f"/servers/{server['id']}")["server"], {"shutoff"}, {"error"}, 600)

    def snapshot_instance(self, env: Mapping[str, Any], instance: str, workdir: Path,
                          action: ActionContext = NO_ACTION) -> SourceSnapshot:
        snap_dir = workdir / "snapshot"
        snap_dir.mkdir(parents=True, exist_ok=True)
        marker = snap_dir / "snapshot.json"
        # Idempotent: a retried activity reuses the image (and download) of the first attempt.
        state: dict[str, Any] = json.loads(marker.read_text()) if marker.exists() else {}
        if not state:
            server = self._find_server(instance)
            if server is not None:
                made = self.cloud.request("compute", "POST", f"/servers/{server['id']}/action",
                                          json={"createImage": {"name": f"sterna-snapshot-{instance}-"
                                                                        f"{uuid.uuid4().hex[:8]}"}})
                state = {"image_id": made["image_id"], "created": True}
            else:
                image = self._find_image(instance)
                if image is None:
                    raise NotFound(f"No server or image named '{instance}' in this OpenStack project")
                state = {"image_id": image["id"], "created": False}
            marker.write_text(json.dumps(state))
        image_id = state["image_id"]
        image = self.cloud.wait(f"snapshot image {image_id}", lambda: self.cloud.request(
            "image", "GET", f"/v2/images/{image_id}"), {"active"}, {"killed", "deleted"}, 3600)
        fmt = image.get("disk_format") or "raw"
        target = snap_dir / f"root.{fmt}"
        if not target.exists():
            md5 = glance.download(self.cloud, image_id, target)
            if image.get("checksum") and md5 != image["checksum"]:
                target.unlink()
                raise ProviderError(f"Image {image_id} downloaded with checksum {md5}, Glance has "
                                    f"{image['checksum']}")
        from diskio.local import open_local_source

        src = open_local_source(target, fmt)
        try:
            size = src.size
        finally:
            src.close()
        return SourceSnapshot(instance=instance, snapshot_id=image_id,
                              disks=[DiskLocator(disk_id="root", size_bytes=size, format=fmt, path=str(target))],
                              details={"created": state["created"], "dir": str(snap_dir)})

    def open_disk(self, snapshot: SourceSnapshot, disk: DiskLocator) -> DiskSource:
        from diskio.local import open_local_source

        assert disk.path is not None
        return open_local_source(disk.path, disk.format)

    def delete_snapshot(self, snapshot: SourceSnapshot) -> None:
        if snapshot.details.get("created"):
            with contextlib.suppress(NotFound):
                self.cloud.request("image", "DELETE", f"/v2/images/{snapshot.snapshot_id}")
        if snapshot.details.get("dir"):
            shutil.rmtree(snapshot.details["dir"], ignore_errors=True)

    # -- destination -------------------------------------------------------------------------------
    def _name(self, action: ActionContext, export_info: InstanceInfo) -> str:
        return str(action.instance_name or export_info.name)

    def _flavor(self, env: Mapping[str, Any], info: InstanceInfo, disk_gb: int) -> dict[str, Any]:
        flavors = self._flavors()
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

    def _networks(self, network_map: Mapping[str, Any], info: InstanceInfo) -> list[dict[str, str]]:
        nets = self.cloud.request("network", "GET", "/v2.0/networks")["networks"]
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

    def _groups(self, env: Mapping[str, Any]) -> list[dict[str, str]]:
        names = list(env.get("security_groups") or [])
        if names:
            known = {g["name"] for g in self._security_groups()} | {g["id"] for g in self._security_groups()}
            unknown = [n for n in names if n not in known]
            if unknown:
                raise InvalidInput(f"Unknown security group(s): {', '.join(unknown)}")
        return [{"name": n} for n in names]

    def validate_destination(self, env: Mapping[str, Any], export_info: InstanceInfo,
                             action: ActionContext = NO_ACTION) -> None:
        self.cloud.endpoint("image")
        self.cloud.endpoint("compute")
        disk_gb = max(1, -(-sum(d.size_bytes for d in export_info.devices.disks) // GiB))
        self._flavor(env, export_info, disk_gb)
        self._networks(action.network_map, export_info)
        self._groups(env)
        name = self._name(action, export_info)
        for s in self._servers():
            if s["name"] == name and (s.get("metadata") or {}).get("sterna_migration_id") != action.action_id:
                raise InvalidInput(f"A server named '{name}' already exists at the destination")

    async def import_disk(
        self, env: Mapping[str, Any], export_info: InstanceInfo, disk: DiskLocator, ctx: TransferContext,
        action: ActionContext = NO_ACTION,
    ) -> ImportedDisk:
        import asyncio

        assert disk.path is not None
        path = Path(disk.path)
        name = f"{self._name(action, export_info)}-{disk.disk_id}"
        migration_id = action.action_id or ""
        # A retried upload starts over: Glance images can't be resumed, and a queued or
        # half-written image of an earlier attempt is deleted first.
        images = await asyncio.to_thread(self.cloud.request, "image", "GET",
                                         f"/v2/images?name={name}&limit=100")
        for old in images["images"]:
            if old.get("sterna_migration_id") == migration_id:
                await asyncio.to_thread(self.cloud.request, "image", "DELETE", f"/v2/images/{old['id']}")
        image = await asyncio.to_thread(self.cloud.request, "image", "POST", "/v2/images", json={
            "name": name, "disk_format": self.TARGET_DISK_FORMAT, "container_format": "bare",
            "visibility": "private", "tags": ["sterna"], "sterna_migration_id": migration_id,
            "sterna_disk_id": disk.disk_id, "hw_disk_bus": "virtio", "hw_vif_model": "virtio",
            **({"hw_firmware_type": "uefi"} if export_info.firmware_type == "EFI" else {}),
        })
        size = path.stat().st_size

        async def progress(done: int, total: int) -> None:
            await ctx.progress(TransferProgress(bytes_done=done, bytes_total=total))

        digests = await glance.upload(self.cloud, image["id"], path, on_progress=progress,
                                      bandwidth_limit=ctx.bandwidth_limit)
        final = await asyncio.to_thread(self.cloud.wait, f"image {image['id']}", lambda: self.cloud.request(
            "image", "GET", f"/v2/images/{image['id']}"), {"active"}, {"killed", "deleted"}, 600, 0.5)
        glance.verify(final, digests, size)
        ctx.event(f"Uploaded {disk.disk_id} to Glance image {image['id']}: {size} bytes, md5 {digests['md5']} "
                  "(matches Glance's checksum)")
        return ImportedDisk(disk_id=disk.disk_id, details={
            "image_id": image["id"], "image_name": name, "format": self.TARGET_DISK_FORMAT, "size": size,
            "checksum": digests["md5"], "virtual_size": disk.size_bytes})

    def deploy_instance(
        self, env: Mapping[str, Any], export_info: InstanceInfo, disks: list[ImportedDisk],
        action: ActionContext = NO_ACTION,
    ) -> DeployedInstance:
        if not disks:
            raise InvalidInput("Nothing to boot: no disk was imported")
        name = self._name(action, export_info)
        disk_gb = max(1, -(-int(disks[0].details.get("virtual_size") or GiB) // GiB))
        flavor = self._flavor(env, export_info, disk_gb)
        networks = self._networks(action.network_map, export_info)
        groups = self._groups(env)
        migration_id = action.action_id or ""
        existing = next((s for s in self._servers() if s["name"] == name
                         and (s.get("metadata") or {}).get("sterna_migration_id") == migration_id), None)
        if existing is not None:  # a retried deploy finds the server of its first attempt
            server_id = existing["id"]
        else:
            body: dict[str, Any] = {
                "name": name, "flavorRef": flavor["id"], "networks": networks or "none",
                "metadata": {"sterna_migration_id": migration_id, "migrated_from": export_info.id},
            }
            if groups:
                body["security_groups"] = groups
            if env.get("keypair_name"):
                body["key_name"] = env["keypair_name"]
            if env.get("availability_zone"):
                body["availability_zone"] = env["availability_zone"]
            if env.get("boot_from_volume"):
                size_gb = int(env.get("volume_size_gb") or disk_gb)
                body["block_device_mapping_v2"] = [
                    {"boot_index": i if i == 0 else -1, "uuid": d.details["image_id"], "source_type": "image",
                     "destination_type": "volume", "delete_on_termination": True,
                     "volume_size": size_gb if i == 0 else
                     max(1, -(-int(d.details.get("virtual_size") or GiB) // GiB))}
                    for i, d in enumerate(disks)]
            else:
                body["imageRef"] = disks[0].details["image_id"]
                if len(disks) > 1:
                    body["block_device_mapping_v2"] = [
                        {"boot_index": 0, "uuid": disks[0].details["image_id"], "source_type": "image",
                         "destination_type": "local", "delete_on_termination": True},
                        *({"boot_index": -1, "uuid": d.details["image_id"], "source_type": "image",
                           "destination_type": "volume", "delete_on_termination": True,
                           "volume_size": max(1, -(-int(d.details.get("virtual_size") or GiB) // GiB))}
                          for d in disks[1:])]
            server_id = self.cloud.request("compute", "POST", "/servers", json={"server": body})["server"]["id"]
        server = self.cloud.wait(f"server {name}", lambda: self.cloud.request(
            "compute", "GET", f"/servers/{server_id}")["server"], {"active"}, {"error"},
            float(env.get("boot_timeout", 600)))
        return DeployedInstance(instance=export_info.name, id=server_id, name=name, details={
            "flavor": flavor["name"], "flavor_id": flavor["id"], "networks": [n["uuid"] for n in networks],
            "security_groups": [g["name"] for g in groups], "status": server.get("status"),
            "boot_from_volume": bool(env.get("boot_from_volume")),
            "disks": [d.details for d in disks]})

    def verify_boot(self, env: Mapping[str, Any], deployed: DeployedInstance, timeout: float,
                    on_stage: Callable[[str], None] | None = None) -> list[str]:
        # on_stage: this check polls status checks and returns their lines at the end; no stages yet.
        import time

        from core.polling import poll_until

        def booted() -> list[str] | None:
            out = self.cloud.request("compute", "POST", f"/servers/{deployed.id}/action",
                                     json={"os-getConsoleOutput": {"length": 200}})
            lines = [line for line in str(out.get("output") or "").splitlines() if line.strip()]
            hits = [line.strip() for line in lines if any(m in line for m in BOOT_MARKERS)]
            return [f"console of server {deployed.id}: {line}" for line in hits[-3:]] if hits else None

        evidence = poll_until(time.monotonic() + timeout, 5, booted)
        if evidence is None:
            raise ProviderError(f"Server {deployed.id} showed no sign of a booted guest on its console "
                                f"within {timeout:.0f}s")
        return evidence

    def cleanup(
        self,
        env: Mapping[str, Any],
        instance: str,
        disks: list[ImportedDisk],
        deployed: DeployedInstance | None,
        succeeded: bool,
        action: ActionContext = NO_ACTION,
    ) -> list[str]:
        if succeeded:
            return []
        removed = []
        migration_id = action.action_id or ""
        servers = [s for s in self._servers() if (s.get("metadata") or {}).get("sterna_migration_id") == migration_id
                   and (deployed is None or s["id"] == deployed.id)]
        for s in servers:
            try:
                self.cloud.request("compute", "DELETE", f"/servers/{s['id']}")
                removed.append(f"Deleted server {s['id']} ({s['name']})")
            except NotFound:
                pass
        image_ids = {d.details["image_id"] for d in disks if d.details.get("image_id")}
        images = self.cloud.request("image", "GET", "/v2/images?tag=sterna&limit=1000")["images"]
        image_ids |= {i["id"] for i in images if i.get("sterna_migration_id") == migration_id}
        for image_id in sorted(image_ids):
            try:
                self.cloud.request("image", "DELETE", f"/v2/images/{image_id}")
                removed.append(f"Deleted Glance image {image_id}")
            except NotFound:
                pass
        return removed
