"""A transfer's Keystone trust (auth_strategy = keystone, the real Keystone, Glance and the fake Nova): made by
``POST /transfers``, acted through by its executions and deployments, gone with the transfer."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from client.sdk import SternaClient
from tests.api.test_replica_store import OPENSTACK_ENV, OPENSTACK_NETWORKS, _deploy, _execute, glance_image
from tests.api.test_transfers import error_of
from tests.conftest import wait_for
from tests.helpers import identical, inventories, own_api_and_worker
from tests.leftovers import temporal
from tests.peers import checked
from tests.peers.openstack.fixtures import KeystoneStack, OpenStackCloud
from workflows import ids

pytestmark = pytest.mark.slow
MiB = 1024**2


def _trust_status(cloud: OpenStackCloud, trust_id: str) -> int:
    with cloud.peers.admin() as admin:
        return admin.get(f"/OS-TRUST/trusts/{trust_id}").status_code


def _trusts_of(cloud: OpenStackCloud, user: str) -> set[str]:
    """The trusts a user has granted, as Keystone lists them (deleted ones are not listed)."""
    with cloud.peers.admin() as admin:
        r = admin.get("/OS-TRUST/trusts", params={"trustor_user_id": cloud.peers.users[user].id})
        r.raise_for_status()
        return {t["id"] for t in r.json()["trusts"]}


# ~25 s: one 8 MiB execution into the replica store, one deployment into Glance.
def test_a_same_cloud_transfer_runs_through_its_trust_after_the_token_is_revoked(keystone_stack: KeystoneStack,
                                                                                tmp_path: Path) -> None:
    stack, vm = keystone_stack, "vm-trust-os"
    assert stack.cloud is not None
    cloud = stack.cloud
    src, _ = inventories(stack, [vm], data_mib=8)
    token = cloud.peers.token("alice")
    alice = cloud.peers.users["alice"]
    with SternaClient(stack.url, alice.project_id, token=token) as api:
        origin = api.create_endpoint(f"inv-{src.name}", "local", {"path": str(src)})["id"]
        # No connection_info: "this cloud, as the caller"; the worker has no caller, only the transfer's trust.
        dest = api.create_endpoint(f"os-{src.name}", "openstack", {})["id"]
        t = api.create_transfer(origin_endpoint_id=origin, destination_endpoint_id=dest, instances=[vm],
                                skip_os_morphing=True, destination_environment=OPENSTACK_ENV,
                                network_map=OPENSTACK_NETWORKS)
    trust_id = t["trust_id"]
    assert trust_id and _trust_status(cloud, trust_id) == 200, "the transfer's trust exists in Keystone"
    with cloud.peers.admin() as admin:  # the creating token is revoked: nothing may depend on it
        assert admin.delete("/auth/tokens", headers={"X-Subject-Token": token}).status_code == 204

    with stack.as_user("alice") as api:
        _execute(api, t["id"])
        d = _deploy(api, t["id"])
        assert d["trust_id"] == trust_id, "the deployment acted through its transfer's trust"
        image_id = d["transfer_result"][vm]["details"]["disks"][0]["image_id"]
        glance_image(cloud, image_id, tmp_path / "from-glance.qcow2")
        assert identical(src / vm / "disk-0.raw", tmp_path / "from-glance.qcow2")
        assert _trust_status(cloud, trust_id) == 200, "executions and deployments leave the transfer's trust"

        api.delete_transfer(t["id"])
        assert _trust_status(cloud, trust_id) == 404, "the trust is gone with the transfer"
        assert api.get_deployment(d["id"])["trust_id"] is None, "the deployment no longer names a deleted trust"


# ~10 s: an API and a worker of their own (on the Keystone stack) that know a destination checked at create.
def test_a_transfer_create_that_fails_after_its_trust_was_made_leaves_no_trust(keystone_stack: KeystoneStack,
                                                                              tmp_path: Path) -> None:
    stack = keystone_stack
    assert stack.cloud is not None
    src, dst = inventories(stack, ["vm-trust-bad"], data_mib=1)
    # The Keystone stack's processes take this process's PYTHONPATH (its env names none of its own).
    plugins = os.pathsep.join(filter(None, [os.environ.get("PYTHONPATH"), str(checked.plugin_path(tmp_path))]))
    alice = stack.cloud.peers.users["alice"]
    with own_api_and_worker(stack, tmp_path / "own", PYTHONPATH=plugins) as own, \
            SternaClient(f"http://127.0.0.1:{own.settings.api_port}", alice.project_id,
                         token=stack.cloud.peers.token("alice")) as api:
        origin = api.create_endpoint(f"src-{src.name}", "local", {"path": str(src)})["id"]
        dest = api.create_endpoint(f"dst-{dst.name}", checked.PLATFORM, {"path": str(dst)})["id"]
        before = _trusts_of(stack.cloud, "alice")
        # The destination's check runs after the trust is made (and through it), and refuses the size.
        r = api.http.post("/transfers", json={"transfer": {
            "origin_endpoint_id": origin, "destination_endpoint_id": dest, "instances": ["vm-trust-bad"],
            "destination_environment": {"flavor_name": "m1.galactic"}}})
        assert "refused the transfer" in error_of(r, 400)
        # Earlier tests' trusts may still be going away: no trust of Alice's may be new.
        assert _trusts_of(stack.cloud, "alice") <= before, "the refused create left its trust behind"
        # With a size the check takes, the same create keeps a trust of Alice's (the check above is not vacuous).
        t = api.create_transfer(origin_endpoint_id=origin, destination_endpoint_id=dest, instances=["vm-trust-bad"],
                                destination_environment={"flavor_name": "m1.small"})
        assert t["trust_id"] in _trusts_of(stack.cloud, "alice") - before
        api.delete_transfer(t["id"])
        assert t["trust_id"] not in _trusts_of(stack.cloud, "alice")


# ~5 s: an execution slowed by its bandwidth limit is terminated, then its forced cleanup runs to its end.
def test_a_force_cancelled_execution_leaves_the_transfer_its_trust(keystone_stack: KeystoneStack) -> None:
    """The forced cleanup releases a *migration's* trust (terminate skipped its own release); a transfer's
    next executions and deployments still act through the transfer's."""
    stack, vm = keystone_stack, "vm-trust-force"
    assert stack.cloud is not None
    src, _ = inventories(stack, [vm], data_mib=32)
    with stack.as_user("alice") as api:
        origin = api.create_endpoint(f"inv-{src.name}", "local", {"path": str(src)})["id"]
        dest = api.create_endpoint(f"os-{src.name}", "openstack", {})["id"]
        t = api.create_transfer(origin_endpoint_id=origin, destination_endpoint_id=dest, instances=[vm],
                                skip_os_morphing=True, destination_environment=OPENSTACK_ENV,
                                network_map=OPENSTACK_NETWORKS, source_environment={"bandwidth_limit": 2 * MiB})
        execution_id = api.execute_transfer(t["id"])["id"]
        wait_for(lambda: any(task["status"] == "RUNNING" for task in api.get_execution(t["id"], execution_id)["tasks"]),
                 60, 0.2, "the execution under way")
        api.cancel_execution(t["id"], execution_id, force=True)
        asyncio.run(_finished(stack, ids.forced_cleanup(t["id"], kind="transfer", execution_id=execution_id)))
        assert api.get_execution(t["id"], execution_id)["status"] == "CANCELED"
        assert _trust_status(stack.cloud, t["trust_id"]) == 200, "the forced cleanup left the transfer's trust"
        assert api.get_transfer(t["id"])["trust_id"] == t["trust_id"]
        api.delete_transfer(t["id"])
    assert _trust_status(stack.cloud, t["trust_id"]) == 404


async def _finished(stack: KeystoneStack, workflow_id: str) -> None:
    await (await temporal(stack)).get_workflow_handle(workflow_id).result()
