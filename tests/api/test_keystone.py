"""auth_strategy = keystone against the real Keystone: tokens, project isolation, policy, catalog, trusts."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from tests.conftest import wait_final, wait_for
from tests.helpers import api_env, endpoints, export_progress, inventories
from tests.peers.openstack.fixtures import KeystoneStack, register_cli

pytestmark = pytest.mark.slow


def test_missing_or_garbage_token_is_401_in_coriolis_shape(keystone_stack: KeystoneStack) -> None:
    assert keystone_stack.cloud is not None
    project = keystone_stack.cloud.peers.users["alice"].project_id
    # A real token of Alice's, revoked before its first use: Keystone no longer knows it.
    revoked = keystone_stack.cloud.peers.token("alice")
    with keystone_stack.cloud.peers.admin() as admin:
        assert admin.delete("/auth/tokens", headers={"X-Subject-Token": revoked}).status_code == 204
    for headers in ({}, {"X-Auth-Token": "garbage"}, {"X-Auth-Token": "gAAAAABnot-a-real-fernet-token"},
                    {"X-Auth-Token": revoked}):
        r = httpx.get(f"{keystone_stack.url}/v1/{project}/migrations", headers=headers)
        assert r.status_code == 401, (headers, r.text)
        assert r.json()["error"]["code"] == 401 and r.json()["error"]["fault"] == "unauthorized"


def test_projects_are_isolated(keystone_stack: KeystoneStack) -> None:
    assert keystone_stack.cloud is not None
    peers = keystone_stack.cloud.peers
    src, dst = inventories(keystone_stack, ["vm-a"])
    with keystone_stack.as_user("alice") as alice, keystone_stack.as_user("bob") as bob:
        origin, dest = endpoints(alice, src, dst)
        # Auth is the subject here, not the guest: no OS morphing (minutes of libguestfs under TCG).
        m = alice.create_migration(origin_endpoint_id=origin, destination_endpoint_id=dest, instances=["vm-a"],
                                   skip_os_morphing=True)
        assert m["id"] in [x["id"] for x in alice.list_migrations()]
        assert alice.get_migration(m["id"])["project_id"] == peers.users["alice"].project_id
        # Bob, in his own project, sees none of it and gets 404 on Alice's ids.
        assert bob.list_migrations() == [] and bob.list_endpoints() == []
        for path in (f"/migrations/{m['id']}", f"/endpoints/{origin}"):
            r = bob.http.get(path)
            assert r.status_code == 404, r.text
        assert bob.http.delete(f"/migrations/{m['id']}").status_code == 404
        assert bob.http.post(f"/migrations/{m['id']}/actions", json={"cancel": None}).status_code == 404
        # Bob's token on Alice's project URL: refused.
        r = bob.http.get(f"{keystone_stack.url}/v1/{peers.users['alice'].project_id}/migrations")
        assert r.status_code == 403 and r.json()["error"]["fault"] == "forbidden"
        # An admin token may act on Alice's project.
        with peers.admin() as admin:
            token = admin.headers["X-Auth-Token"]
        r = httpx.get(f"{keystone_stack.url}/v1/{peers.users['alice'].project_id}/migrations/{m['id']}",
                      headers={"X-Auth-Token": token})
        assert r.status_code == 200 and r.json()["migration"]["id"] == m["id"]
        final = wait_final(alice, m["id"])
    assert final["last_execution_status"] == "COMPLETED", final


def test_policy_file_denies_create_to_a_reader(keystone_stack: KeystoneStack) -> None:
    """The stack's policy file makes creating need member or admin; rita is a reader of tenant-a."""
    with keystone_stack.as_user("rita") as rita:
        assert rita.http.get("/migrations").status_code == 200
        r = rita.http.post("/endpoints", json={"endpoint": {"name": "x", "type": "local",
                                                            "connection_info": {"path": "/tmp"}}})
        assert r.status_code == 403, r.text
        assert "migration:endpoints:create" in r.json()["error"]["message"]
        r = rita.http.post("/migrations", json={"migration": {"origin_endpoint_id": "x",
                                                              "destination_endpoint_id": "y", "instances": ["a"]}})
        assert r.status_code == 403 and "migration:migrations:create" in r.json()["error"]["message"]


def test_registration_is_idempotent_and_the_catalog_finds_the_api(keystone_stack: KeystoneStack) -> None:
    assert keystone_stack.cloud is not None
    cloud = keystone_stack.cloud
    assert "type migration" in keystone_stack.register_output
    register_cli(cloud, keystone_stack.settings.api_port)  # a second run changes nothing
    with cloud.peers.admin() as admin:
        services = [s for s in admin.get("/services", params={"type": "migration"}).json()["services"]]
        assert len(services) == 1
        eps = admin.get("/endpoints", params={"service_id": services[0]["id"]}).json()["endpoints"]
        assert sorted(e["interface"] for e in eps) == ["admin", "internal", "public"]
        assert {e["url"] for e in eps} == {f"{keystone_stack.url}/v1/%(tenant_id)s"}
        users = admin.get("/users", params={"name": "sterna"}).json()["users"]
        assert len(users) == 1
    session = cloud.peers.session("alice")
    assert session.get_endpoint(service_type="migration", interface="public") == \
        f"{keystone_stack.url}/v1/{cloud.peers.users['alice'].project_id}"


@pytest.fixture(params=["one-shot", "on-transfers"])
def migration_path(request: pytest.FixtureRequest, keystone_stack: KeystoneStack) -> Iterator[KeystoneStack]:
    """The API restarted to run migrations as transfers (issue 13, the default), or with the one-shot
    migration workflow that ``STERNA_MIGRATIONS_ON_TRANSFERS=false`` keeps for one release."""
    on = "true" if request.param == "on-transfers" else "false"
    with api_env(keystone_stack, STERNA_MIGRATIONS_ON_TRANSFERS=on):
        yield keystone_stack


def test_a_keystone_session_script_creates_watches_and_cancels(migration_path: KeystoneStack) -> None:
    """What a Coriolis client does: find the API in the catalog, authenticate with the session only."""
    keystone_stack = migration_path
    assert keystone_stack.cloud is not None
    cloud = keystone_stack.cloud
    src, dst = inventories(keystone_stack, ["vm-a"], data_mib=48)
    session = cloud.peers.session("alice")
    api = {"service_type": "migration", "interface": "public"}

    def call(method: str, path: str, body: object = None) -> object:
        r = session.request(path, method, endpoint_filter=api, json=body, raise_exc=False)
        assert r.status_code < 400, r.text
        return r.json() if r.content else None

    origin = call("POST", "/endpoints", {"endpoint": {"name": "s", "type": "local",
                                                      "connection_info": {"path": str(src)}}})
    dest = call("POST", "/endpoints", {"endpoint": {"name": "d", "type": "local",
                                                    "connection_info": {"path": str(dst)}}})
    m = call("POST", "/migrations", {"migration": {
        "origin_endpoint_id": origin["endpoint"]["id"], "destination_endpoint_id": dest["endpoint"]["id"],  # type: ignore[index]
        "instances": ["vm-a"], "skip_os_morphing": True,
        "source_environment": {"bandwidth_limit": 4 * 1024 * 1024}}})["migration"]  # type: ignore[index]
    wait_for(lambda: export_progress(call("GET", f"/migrations/{m['id']}")["migration"])[0] > 0,  # type: ignore[index]
             60, 0.2, "export under way")
    trust_id = _trust_of(keystone_stack, m["id"])
    assert trust_id, "the running migration acts through a trust"
    with cloud.peers.admin() as admin:
        assert admin.get(f"/OS-TRUST/trusts/{trust_id}").status_code == 200
    call("POST", f"/migrations/{m['id']}/actions", {"cancel": None})
    final = wait_for(lambda: (x := call("GET", f"/migrations/{m['id']}")["migration"])[  # type: ignore[index]
        "last_execution_status"] in ("CANCELED", "ERROR", "COMPLETED") and x, 60, 0.3, "cancel")
    assert final["last_execution_status"] == "CANCELED"

    def trust_gone() -> bool:
        """Deleted in Keystone, then forgotten by the record DB (in that order)."""
        with cloud.peers.admin() as admin:
            deleted = admin.get(f"/OS-TRUST/trusts/{trust_id}").status_code == 404
        return deleted and _trust_of(keystone_stack, m["id"]) is None

    assert wait_for(trust_gone, 30, 0.5, "the trust deleted when the migration ended")


def _trust_of(stack: KeystoneStack, migration_id: str) -> str | None:
    from core.crypto import SecretBox
    from store.db import Database
    from store.repo import Store

    return Store(Database(stack.settings.db_url), SecretBox(stack.settings)).migration_trust(migration_id)


def test_force_cancel_still_deletes_the_trust(migration_path: KeystoneStack) -> None:
    """Terminate skips the workflow's own release: the forced cleanup does it."""
    keystone_stack = migration_path
    assert keystone_stack.cloud is not None
    cloud = keystone_stack.cloud
    src, dst = inventories(keystone_stack, ["vm-f"], data_mib=48)
    with keystone_stack.as_user("alice") as api:
        origin, dest = endpoints(api, src, dst)
        m = api.create_migration(origin_endpoint_id=origin, destination_endpoint_id=dest, instances=["vm-f"],
                                 skip_os_morphing=True, source_environment={"bandwidth_limit": 4 * 1024 * 1024})
        wait_for(lambda: export_progress(api.get_migration(m["id"]))[0] > 0, 60, 0.2, "export under way")
        trust_id = _trust_of(keystone_stack, m["id"])
        assert trust_id
        api.cancel_migration(m["id"], force=True)

    def trust_gone() -> bool:
        """Deleted in Keystone, then forgotten by the record DB (in that order)."""
        with cloud.peers.admin() as admin:
            deleted = admin.get(f"/OS-TRUST/trusts/{trust_id}").status_code == 404
        return deleted and _trust_of(keystone_stack, m["id"]) is None

    assert wait_for(trust_gone, 60, 0.5, "the trust deleted after the forced cleanup")
