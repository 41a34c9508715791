"""Endpoints: CRUD, validate-connection, inventory, providers, OpenAPI; secrets stay masked."""

from __future__ import annotations

import base64
import uuid

import httpx
import pytest

from tests.conftest import RunningStack
from tests.helpers import inventories

pytestmark = pytest.mark.slow


def test_endpoint_lifecycle_and_inventory(stack: RunningStack) -> None:
    src, _dst = inventories(stack, ["vm-a", "vm-b"], 1)
    with stack.client(f"ep-{uuid.uuid4().hex[:6]}") as api:
        ep = api.create_endpoint("lab", "local", {"path": str(src), "password": "s3cr3t-pw"}, "a lab")
        assert ep["connection_info"]["password"] == "***"
        listed = api.list_endpoints()
        assert [e["id"] for e in listed] == [ep["id"]]
        assert "s3cr3t-pw" not in str(listed)
        assert api.validate_endpoint(ep["id"]) == {"valid": True, "message": None}
        names = sorted(i["name"] for i in api.list_instances(ep["id"]))
        assert names == ["vm-a", "vm-b"]
        one = api.get_instance(ep["id"], "vm-a")
        assert one["num_cpu"] == 1 and one["devices"]["disks"][0]["size_bytes"] == 256 * 1024**2
        # PUT with the mask keeps the stored password; a new path is applied.
        updated = api.update_endpoint(ep["id"], name="lab2", connection_info={"path": "/nonexistent",
                                                                               "password": "***"})
        assert updated["name"] == "lab2"
        result = api.validate_endpoint(ep["id"])
        assert result["valid"] is False and "/nonexistent" in result["message"]
        api.delete_endpoint(ep["id"])
        assert api.list_endpoints() == []


def test_endpoint_used_by_a_migration_cannot_be_deleted(stack: RunningStack) -> None:
    src, dst = inventories(stack, ["vm-a"], 1)
    with stack.client() as api:
        a = api.create_endpoint("a", "local", {"path": str(src)})
        b = api.create_endpoint("b", "local", {"path": str(dst)})
        m = api.create_migration(origin_endpoint_id=a["id"], destination_endpoint_id=b["id"], instances=["vm-a"])
        r = api.http.delete(f"/endpoints/{a['id']}")
        # as Coriolis: 403 "N transfers would be orphaned!"
        assert r.status_code == 403 and "orphaned" in r.json()["error"]["message"]
        api.wait(m["id"], timeout=120)


def test_providers_and_schemas_and_openapi(stack: RunningStack) -> None:
    with stack.client() as api:
        providers = api.providers()
        assert set(providers["local"]["types"]) >= {4, 8, 16, 32}
        r = api.http.get("/providers/local/schemas/16")
        assert r.json()["schemas"]["connection_info_schema"]["required"] == ["path"]
    doc = httpx.get(f"{stack.url}/openapi.json").json()
    assert doc["openapi"].startswith("3.")
    assert "/v1/{project_id}/migrations" in doc["paths"]
    assert "MigrationCreate" in doc["components"]["schemas"]


def test_instance_path_is_base64(stack: RunningStack) -> None:
    src, _ = inventories(stack, ["vm-x"], 1)
    with stack.client() as api:
        ep = api.create_endpoint("b64", "local", {"path": str(src)})
        b64 = base64.urlsafe_b64encode(b"vm-x").decode().rstrip("=")
        assert api.http.get(f"/endpoints/{ep['id']}/instances/{b64}").json()["instance"]["name"] == "vm-x"
        r = api.http.get(f"/endpoints/{ep['id']}/instances/{base64.urlsafe_b64encode(b'nope').decode()}")
        assert r.status_code == 404
