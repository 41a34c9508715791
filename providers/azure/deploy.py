"""Create the VM: the mapped size, one NIC per source NIC in the mapped subnet with the NSG, the
uploaded OS and data disks attached, boot diagnostics on, everything tagged with the migration id.

Names derive from the migration id and the instance name and every PUT is idempotent, so a
retried activity converges on the same NICs and VM instead of making new ones.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from core.errors import InvalidInput, NotFound
from core.models import DeployedInstance, ImportedDisk, InstanceInfo
from providers.azure import tags as t
from providers.azure.errors import azure_errors
from providers.azure.session import AzureClients
from providers.base import ActionContext


def vm_sizes(clients: AzureClients) -> list[Any]:
    with azure_errors(f"listing VM sizes in {clients.conn.location}", clients.conn.secrets):
        return list(clients.compute.virtual_machine_sizes.list(clients.conn.location))


def choose_vm_size(clients: AzureClients, env: Mapping[str, Any], export_info: InstanceInfo) -> str:
    """``vm_size`` (or ``flavor_name``) if the location offers it, else the smallest that fits."""
    sizes = vm_sizes(clients)
    wanted = env.get("vm_size") or env.get("flavor_name")
    if wanted:
        if wanted not in {s.name for s in sizes}:
            raise InvalidInput(f"VM size '{wanted}' is not offered in {clients.conn.location}; "
                               f"offered: {', '.join(sorted(s.name for s in sizes))}")
        return str(wanted)
    fits = [s for s in sizes if (s.number_of_cores or 0) >= export_info.num_cpu
            and (s.memory_in_mb or 0) >= export_info.memory_mb]
    if not fits:
        raise InvalidInput(f"no VM size in {clients.conn.location} has {export_info.num_cpu} vCPUs and "
                           f"{export_info.memory_mb} MiB")
    return str(min(fits, key=lambda s: (s.number_of_cores, s.memory_in_mb, s.name)).name)


def _entry(env: Mapping[str, Any], nmap: Mapping[str, Any], network: str) -> tuple[str, str | None]:
    entry = nmap.get(network, nmap.get("default"))
    if entry is None:
        raise InvalidInput(f"network_map has no subnet for source network '{network}' (and no 'default')")
    if isinstance(entry, str):
        return entry, env.get("network_security_group_id")
    if isinstance(entry, Mapping) and entry.get("subnet_id"):
        return str(entry["subnet_id"]), entry.get("network_security_group_id") or env.get("network_security_group_id")
    raise InvalidInput(f"network_map entry for '{network}' must be a subnet id or {{'subnet_id', ...}}")


def plan_nics(clients: AzureClients, env: Mapping[str, Any], network_map: Mapping[str, Any],
              export_info: InstanceInfo) -> list[tuple[str, str | None]]:
    """``(subnet id, NSG id)`` per source NIC (one NIC at least), each checked to exist."""
    networks = [n.network_name for n in export_info.devices.nics] or ["default"]
    plan = [_entry(env, network_map, n) for n in networks]
    for subnet, nsg in plan:
        check_network(clients, subnet, nsg)
    return plan


def check_network(clients: AzureClients, subnet: str, nsg: str | None) -> None:
    """The subnet (and NSG, if any) exist: ``InvalidInput`` naming the missing one otherwise."""
    ids = t.parse_id(subnet)
    if not {"resourcegroups", "virtualnetworks", "subnets"} <= ids.keys():
        raise InvalidInput(f"'{subnet}' is not a subnet resource id "
                           "(/subscriptions/…/virtualNetworks/<vnet>/subnets/<subnet>)")
    try:
        with azure_errors(f"looking up subnet {subnet}", clients.conn.secrets):
            clients.network.subnets.get(ids["resourcegroups"], ids["virtualnetworks"], ids["subnets"])
    except NotFound:
        raise InvalidInput(f"subnet '{subnet}' does not exist") from None
    if nsg:
        nids = t.parse_id(nsg)
        try:
            with azure_errors(f"looking up network security group {nsg}", clients.conn.secrets):
                clients.network.network_security_groups.get(
                    nids.get("resourcegroups", ""), nids.get("networksecuritygroups", ""))
        except NotFound:
            raise InvalidInput(f"network security group '{nsg}' does not exist") from None


def check_environment(clients: AzureClients, env: Mapping[str, Any], network_map: Mapping[str, Any]) -> None:
    """At create time, no instance known yet: the size named, and every subnet and NSG named."""
    wanted = env.get("vm_size") or env.get("flavor_name")
    if wanted:
        sizes = {s.name for s in vm_sizes(clients)}
        if wanted not in sizes:
            raise InvalidInput(f"VM size '{wanted}' is not offered in {clients.conn.location}; "
                               f"offered: {', '.join(sorted(sizes))}")
    for network in network_map:
        check_network(clients, *_entry(env, network_map, network))


def vm_name(env: Mapping[str, Any], export_info: InstanceInfo) -> str:
    return t.resource_name(env.get("vm_name") or export_info.name, limit=64)


def deploy_instance(clients: AzureClients, env: Mapping[str, Any], export_info: InstanceInfo,
                    disks: list[ImportedDisk], action: ActionContext) -> DeployedInstance:
    if not disks:
        raise InvalidInput(f"{export_info.name} has no uploaded disk to boot from")
    secrets = clients.conn.secrets
    size = choose_vm_size(clients, env, export_info)
    plan = plan_nics(clients, env, action.network_map, export_info)
    name = vm_name(env, export_info)
    base_tags = {k: v for k, v in {**t.action_tags(action),
                                   t.SOURCE_INSTANCE_TAG: export_info.name}.items() if v}
    nic_ids = []
    for i, (subnet, nsg) in enumerate(plan):
        nic_name = t.resource_name(name, f"nic{i}", limit=80)
        # ARM's wire shape (see importer): the SDK models take it as a mapping.
        nic_props: dict[str, Any] = {"ipConfigurations": [{"name": "ipconfig1", "properties": {
            "subnet": {"id": subnet}, "primary": True, "privateIPAllocationMethod": "Dynamic"}}]}
        if nsg:
            nic_props["networkSecurityGroup"] = {"id": nsg}
        body = {"location": clients.conn.location, "tags": {**base_tags, t.ROLE_TAG: t.ROLE_NIC},
                "properties": nic_props}
        with azure_errors(f"creating network interface {nic_name}", secrets):
            nic = clients.network.network_interfaces.begin_create_or_update(clients.rg, nic_name, body).result()
        nic_ids.append(str(nic.id))
    os_type = "Windows" if export_info.os_type == "windows" else "Linux"
    [os_disk, *data] = disks
    vm = {
        "location": clients.conn.location,
        "tags": {**base_tags, t.ROLE_TAG: t.ROLE_VM},
        "properties": {
            "hardwareProfile": {"vmSize": size},
            "storageProfile": {
                "osDisk": {"createOption": "Attach", "osType": os_type,
                           "managedDisk": {"id": os_disk.details["managed_disk_id"]}},
                "dataDisks": [{"lun": i, "createOption": "Attach", "managedDisk": {"id": d.details["managed_disk_id"]}}
                              for i, d in enumerate(data)],
            },
            "networkProfile": {"networkInterfaces": [
                {"id": nid, "properties": {"primary": i == 0}} for i, nid in enumerate(nic_ids)]},
            # Managed boot diagnostics: the serial console log is the boot evidence.
            "diagnosticsProfile": {"bootDiagnostics": {"enabled": True}},
        },
    }
    with azure_errors(f"creating virtual machine {name} ({size})", secrets):
        created = clients.compute.virtual_machines.begin_create_or_update(clients.rg, name, vm).result()
    return DeployedInstance(
        instance=export_info.name, id=str(created.id), name=name,
        details={"vm_size": size, "nics": nic_ids, "subnets": [p[0] for p in plan],
                 "network_security_groups": [p[1] for p in plan if p[1]], "location": clients.conn.location},
    )
