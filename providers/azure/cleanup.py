"""Remove what the destination side created for one instance, found by its tags: the migration's id and
the source instance's name, so that a sibling instance of the same migration (whose upload or deploy may be
under way) is never touched.

On success nothing Sterna made is temporary (the disks, NICs and VM are the result), but any
SAS still granted on this instance's disks is revoked. On failure or cancel everything goes,
in dependency order: the VM (which detaches its disks and NICs), the NICs, then the disks, each
after its SAS is revoked. "Already gone" counts as done, so cleanup can run twice.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from core.errors import NotFound, SternaError
from core.models import DeployedInstance, ImportedDisk
from providers.azure import tags as t
from providers.azure.errors import azure_errors
from providers.azure.session import AzureClients

_SAS_STATES = ("ActiveUpload", "ActiveSAS")


class _Cleaner:
    def __init__(self, clients: AzureClients) -> None:
        self.clients = clients
        self.lines: list[str] = []

    def call(self, action: str, fn: Any, *args: Any, done: str | None = None) -> Any:
        """One call (waiting for its long-running operation); "not found" counts as done, other
        failures become a line and the cleanup goes on. ``done`` is the line for success."""
        try:
            with azure_errors(action, self.clients.conn.secrets):
                result = fn(*args)
                if hasattr(result, "result") and hasattr(result, "done"):
                    result = result.result()
        except NotFound:
            return None
        except SternaError as exc:
            self.lines.append(f"could not finish {action}: {exc.message}")
            return None
        if done:
            self.lines.append(done)
        return result


def _mine(items: Any, migration: str | None, source: str | None, role: str) -> list[Any]:
    wanted = {t.MIGRATION_TAG: migration, t.SOURCE_INSTANCE_TAG: source, t.ROLE_TAG: role}
    return [i for i in items or [] if migration and source
            and all((i.tags or {}).get(k) == v for k, v in wanted.items())]


def cleanup(clients: AzureClients, env: Mapping[str, Any], disks: list[ImportedDisk],
            deployed: DeployedInstance | None, succeeded: bool, migration: str | None,
            source: str | None) -> list[str]:
    """``source``: the source instance's name (``ActionContext.source_name``)."""
    c = _Cleaner(clients)
    rg = clients.rg
    compute, network = clients.compute, clients.network
    found_disks = _mine(c.call("listing managed disks", lambda: list(compute.disks.list_by_resource_group(rg))),
                        migration, source, t.ROLE_DISK)
    for disk in found_disks:
        if t.text(disk.disk_state) in _SAS_STATES:
            c.call(f"revoking the SAS of {disk.name}", compute.disks.begin_revoke_access, rg, disk.name,
                   done=f"revoked the SAS of managed disk {disk.name}")
    if succeeded:
        return c.lines
    vms = _mine(c.call("listing virtual machines", lambda: list(compute.virtual_machines.list(rg))),
                migration, source, t.ROLE_VM)
    for vm in vms:
        c.call(f"deleting virtual machine {vm.name}", compute.virtual_machines.begin_delete, rg, vm.name,
               done=f"deleted virtual machine {vm.name}")
    nics = _mine(c.call("listing network interfaces", lambda: list(network.network_interfaces.list(rg))),
                 migration, source, t.ROLE_NIC)
    for nic in nics:
        c.call(f"deleting network interface {nic.name}", network.network_interfaces.begin_delete, rg, nic.name,
               done=f"deleted network interface {nic.name}")
    for disk in found_disks:
        c.call(f"deleting managed disk {disk.name}", compute.disks.begin_delete, rg, disk.name,
               done=f"deleted managed disk {disk.name}")
    return c.lines
