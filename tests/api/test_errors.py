"""Bad input gets a 4xx in Coriolis' error format, and nothing is written."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from tests.conftest import RunningStack
from tests.helpers import endpoints, inventories

pytestmark = pytest.mark.slow


def _snapshot(api: Any) -> tuple[list[str], ...]:
    # Transfers too: a migration runs as one (STERNA_MIGRATIONS_ON_TRANSFERS), and /transfers lists it.
    return ([m["id"] for m in api.list_migrations()], [e["id"] for e in api.list_endpoints()],
            [t["id"] for t in api.list_transfers()], [d["id"] for d in api.list_deployments()])


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


def _migration_body(stack: RunningStack, project: Any, **fields: Any) -> dict[str, Any]:
    src, dst = inventories(stack, [], 1)
    origin, dest = endpoints(project, src, dst)
    return {"migration": {"origin_endpoint_id": origin, "destination_endpoint_id": dest, "instances": ["vm-a"],
                          **fields}}


def test_instance_name_longer_than_the_id_limit_is_refused(stack: RunningStack, project: Any) -> None:
    # Reproducer 12: a 5000-character name left the migration RUNNING forever (child workflow id too long).
    body = _migration_body(stack, project, instances=["x" * 5000])
    before = _snapshot(project)
    _assert_error(project.http.post("/migrations", json=body), 400, "instance names are at most 255 bytes")
    body["migration"]["instances"] = ["é" * 128]  # 256 bytes in UTF-8
    _assert_error(project.http.post("/migrations", json=body), 400, "instance names are at most 255 bytes")
    assert _snapshot(project) == before


def test_oversized_body_is_413(stack: RunningStack, project: Any) -> None:
    # Reproducer 14: 10 MiB of notes was stored and returned in every list.
    body = _migration_body(stack, project, notes="n" * (2 * 1024 * 1024))
    before = _snapshot(project)
    r = project.http.post("/migrations", json=body)
    _assert_error(r, 413, "larger than")
    assert r.json()["error"]["fault"] == "overLimit"

    def chunks() -> Any:  # no Content-Length: the limit holds for a streamed body too
        yield b'{"migration": {"notes": "'
        for _ in range(40):
            yield b"n" * 65536
        yield b'"}}'

    _assert_error(project.http.post("/migrations", content=chunks(), headers={"Content-Type": "application/json"}),
                  413, "larger than")
    assert _snapshot(project) == before


def test_deeply_nested_json_is_400(stack: RunningStack, project: Any) -> None:
    nested = "[" * 1000 + "]" * 1000
    body = b'{"migration": {"instances": ["vm-a"], "user_scripts": {"x": ' + nested.encode() + b"}}}"
    before = _snapshot(project)
    r = project.http.post("/migrations", content=body, headers={"Content-Type": "application/json"})
    _assert_error(r, 400, "nested deeper than")
    assert _snapshot(project) == before


@pytest.mark.parametrize("path", [
    "/migrations/\u00e9t\u00e9", "/endpoints/\u00e9", "/endpoints/{ep}/instances/\u00e9t\u00e9",
    "/migrations?limit=-1", "/migrations/detail?limit=abc", "/endpoints/{ep}/instances?limit=-1",
    "/migrations?marker=%00", "/migrations?status=%ff",
])
def test_bad_path_and_query_parameters_are_400(stack: RunningStack, project: Any, path: str) -> None:
    src, dst = inventories(stack, [], 1)
    origin, _ = endpoints(project, src, dst)
    _assert_error(project.http.get(path.replace("{ep}", origin)), 400, "")


@pytest.mark.parametrize(("field", "value"), [("skip_os_morphing", "yes"), ("shutdown_instances", 1),
                                              ("skip_os_morphing", "false")])
def test_booleans_are_strict(stack: RunningStack, project: Any, field: str, value: Any) -> None:
    body = _migration_body(stack, project, **{field: value})
    before = _snapshot(project)
    _assert_error(project.http.post("/migrations", json=body), 400, f"{field}: Input should be a valid boolean")
    assert _snapshot(project) == before


@pytest.mark.parametrize("path", ["/", "/etc", "{data}", "{data}/inventories/../.."])
def test_local_endpoint_outside_the_allowed_roots_is_refused(stack: RunningStack, project: Any, path: str) -> None:
    # Reproducer 11: a local endpoint's path of /, /etc or ../.. was listed, read and written.
    ep = project.create_endpoint("escape", "local", {"path": path.format(data=stack.root)})
    result = project.validate_endpoint(ep["id"])
    assert result["valid"] is False and "not under an allowed root" in result["message"], result
    _assert_error(project.http.get(f"/endpoints/{ep['id']}/instances"), 400, "not under an allowed root")
