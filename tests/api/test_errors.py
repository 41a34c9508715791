"""Bad input gets a 4xx in Coriolis' error format, and nothing is written."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from tests.conftest import RunningStack
from tests.helpers import endpoints, inventories

pytestmark = pytest.mark.slow


def _snapshot(api: Any) -> tuple[list[str], list[str]]:
    return ([m["id"] for m in api.list_migrations()], [e["id"] for e in api.list_endpoints()])


def _assert_error(r: Any, status: int, needle: str) -> None:
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert err["code"] == status
    assert needle.lower() in err["message"].lower(), err["message"]
    assert err["fault"]


@pytest.fixture
def project(stack: RunningStack) -> Any:
    # A project of its own, so "nothing is written" compares complete listings.
    with stack.client(f"errors-{uuid.uuid4().hex[:8]}") as api:
        yield api


def test_malformed_json(project: Any) -> None:
    before = _snapshot(project)
    r = project.http.post("/migrations", content=b'{"migration": {"instances": [', headers={
        "Content-Type": "application/json"})
    _assert_error(r, 400, "malformed request body")
    assert _snapshot(project) == before


def test_missing_migration_key(project: Any) -> None:
    before = _snapshot(project)
    r = project.http.post("/migrations", json={"instances": ["vm-a"]})
    _assert_error(r, 400, 'encased inside the "migration" key')
    assert _snapshot(project) == before


def test_unknown_provider_type(stack: RunningStack, project: Any) -> None:
    _src, dst = inventories(stack, [], 1)
    before = _snapshot(project)
    body = {"migration": {"origin": {"type": "no-such-cloud", "connection_info": {}},
                          "destination": {"type": "local", "connection_info": {"path": str(dst)}},
                          "instances": ["vm-a"]}}
    _assert_error(project.http.post("/migrations", json=body), 400, "unknown provider type 'no-such-cloud'")
    r = project.http.post("/endpoints", json={"endpoint": {"name": "x", "type": "no-such-cloud",
                                                          "connection_info": {}}})
    _assert_error(r, 400, "unknown provider type")
    assert _snapshot(project) == before


@pytest.mark.parametrize(("instances", "needle"), [
    ([], "at least one instance"),
    (["vm-a", "vm-a"], "duplicate instances: vm-a"),
    ([""], "non-empty"),
])
def test_bad_instance_lists(stack: RunningStack, project: Any, instances: list[str], needle: str) -> None:
    src, dst = inventories(stack, [], 1)
    origin, dest = endpoints(project, src, dst)
    before = _snapshot(project)
    body = {"migration": {"origin_endpoint_id": origin, "destination_endpoint_id": dest,
                          "instances": instances}}
    _assert_error(project.http.post("/migrations", json=body), 400, needle)
    assert _snapshot(project) == before


def test_unknown_migration_id(project: Any) -> None:
    missing = str(uuid.uuid4())
    _assert_error(project.http.get(f"/migrations/{missing}"), 404, "could not be found")
    _assert_error(project.http.delete(f"/migrations/{missing}"), 404, "could not be found")
    _assert_error(project.http.post(f"/migrations/{missing}/actions", json={"cancel": None}), 404,
                  "could not be found")


def test_unknown_endpoint_and_same_endpoint(stack: RunningStack, project: Any) -> None:
    src, dst = inventories(stack, [], 1)
    origin, _ = endpoints(project, src, dst)
    before = _snapshot(project)
    body = {"migration": {"origin_endpoint_id": origin, "destination_endpoint_id": str(uuid.uuid4()),
                          "instances": ["vm-a"]}}
    _assert_error(project.http.post("/migrations", json=body), 404, "could not be found")
    body["migration"]["destination_endpoint_id"] = origin
    _assert_error(project.http.post("/migrations", json=body), 400, "SameDestination")
    assert _snapshot(project) == before


def test_other_project_sees_nothing(stack: RunningStack, project: Any) -> None:
    src, dst = inventories(stack, [], 1)
    origin, _ = endpoints(project, src, dst)
    with stack.client(f"other-{uuid.uuid4().hex[:8]}") as other:
        assert other.list_endpoints() == []
        _assert_error(other.http.get(f"/endpoints/{origin}"), 404, "could not be found")


def test_invalid_cancel_action(project: Any) -> None:
    r = project.http.post(f"/migrations/{uuid.uuid4()}/actions", json={"frobnicate": None})
    assert r.status_code in (400, 404)
    assert "error" in r.json()


@pytest.mark.parametrize(("where", "value"), [
    ("source_environment", 1), ("source_environment", -1), ("source_environment", "fast"),
    ("destination_environment", 0), ("destination_environment", True),
])
def test_bad_bandwidth_limit_is_refused_at_create(stack: RunningStack, project: Any, where: str,
                                                  value: Any) -> None:
    src, dst = inventories(stack, [], 1)
    origin, dest = endpoints(project, src, dst)
    before = _snapshot(project)
    body = {"migration": {"origin_endpoint_id": origin, "destination_endpoint_id": dest, "instances": ["vm-a"],
                          where: {"bandwidth_limit": value}}}
    _assert_error(project.http.post("/migrations", json=body), 400, f"{where}.bandwidth_limit must be an integer")
    assert _snapshot(project) == before
