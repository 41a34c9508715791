"""The served OpenAPI document: it covers every route, it validates, and fuzzing it finds no 5xx (issue 11 §15)."""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

import httpx
import pytest
from openapi_spec_validator import validate
from starlette.routing import Route

from api import openapi
from api.app import ROUTES
from tests.conftest import RunningStack


def _routes() -> set[tuple[str, str]]:
    out = set()
    for route in ROUTES:
        assert isinstance(route, Route)
        for method in route.methods or {"GET"}:
            if method != "HEAD":
                out.add((openapi.PARAM.sub(r"{\1}", route.path), method.lower()))
    return out


def test_document_covers_every_route_and_validates() -> None:
    doc = openapi.document(ROUTES)
    validate(doc)
    served = {(path, method) for path, ops in doc["paths"].items() for method in ops}
    assert served == _routes()
    for path, ops in doc["paths"].items():
        for method, op in ops.items():
            declared = {p["name"] for p in op.get("parameters", []) if p["in"] == "path"}
            assert declared == {name for name, _ in openapi.PARAM.findall(path)}, (path, method)
    for alias in ("/transfers", "/transfers/{transfer_id}/executions", "/transfers/{transfer_id}/schedules",
                  "/deployments", "/replicas"):
        assert f"/v1/{{project_id}}{alias}" in doc["paths"], alias
    body = doc["paths"]["/v1/{project_id}/replicas"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert body["required"] == ["replica"]
    assert "TransferCreate" in doc["components"]["schemas"]


@pytest.mark.slow
@pytest.mark.parametrize("stack", ["sqlite"], indirect=True)
def test_served_document_is_the_generated_one(stack: RunningStack) -> None:
    doc = httpx.get(f"{stack.url}/openapi.json").json()
    validate(doc)
    assert doc == openapi.document(ROUTES)


@pytest.mark.slow
@pytest.mark.parametrize("stack", ["sqlite"], indirect=True)
def test_fuzzing_finds_no_server_error(stack: RunningStack) -> None:
    """Schemathesis against the real API: every operation, 15 derandomized examples each, no 5xx, and
    every answer as the document describes it (an error is the Coriolis error body).

    Positive mode only: measured on this 2-core machine (shared with a suite run), 64 operations,
    about 950 requests, take 20-40 s of fuzzing (35-55 s with the stack's start). Negative
    mode, even at 3 examples per operation, took 180 s more (its generation is the cost), so it
    is left out to keep the test within its budget.
    """
    import requests
    import schemathesis
    from hypothesis import HealthCheck, Phase, given, settings
    from hypothesis.errors import Unsatisfiable
    from schemathesis import GenerationMode
    from schemathesis.checks import not_a_server_error
    from schemathesis.specs.openapi.checks import response_schema_conformance

    schema = schemathesis.openapi.from_url(f"{stack.url}/openapi.json")
    failures: list[str] = []
    session = requests.Session()
    started = time.monotonic()
    operations: set[tuple[str, str]] = set()
    statuses: Counter[int] = Counter()
    for result in schema.get_all_operations():
        operation = result.ok()
        operations.add((operation.path, operation.method.lower()))
        for mode in (GenerationMode.POSITIVE,):

            @settings(max_examples=15, derandomize=True, deadline=None, database=None,
                      phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck))
            @given(case=operation.as_strategy(generation_mode=mode))
            def fuzz(case: Any) -> None:
                try:
                    response = case.call_and_validate(base_url=stack.url, session=session,
                                                      checks=[not_a_server_error, response_schema_conformance],
                                                      timeout=30)
                    statuses[response.status_code] += 1
                except Exception as exc:  # recorded; the run goes on to the other operations
                    statuses[500] += 1
                    failures.append(f"{case.operation.method.upper()} {case.operation.path}: {exc}\n"
                                    f"  {case.as_curl_command()}")

            try:
                fuzz()
            except Unsatisfiable:  # nothing to make invalid (no parameters and no body)
                assert mode is GenerationMode.NEGATIVE, operation.path
    elapsed = time.monotonic() - started
    print(f"schemathesis: {len(operations)} operations, {sum(statuses.values())} requests in {elapsed:.0f} s:",
          dict(sorted(statuses.items())))
    assert not failures, "\n".join(failures[:20])
    # The fuzzer reaches every route but the document itself.
    assert operations == _routes() - {("/openapi.json", "get")}
    assert sum(n for code, n in statuses.items() if 200 <= code < 300) > 0
