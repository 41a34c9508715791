"""The shared request checks, on their own (the API tests drive them through the real stack)."""

from __future__ import annotations

import httpx
import pytest
from pydantic import ValidationError
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from api.limits import RequestLimits, json_depth, path_problem, query_problem
from api.schemas import CancelArgs


def test_json_depth_counts_nesting_not_brackets_in_strings() -> None:
    assert json_depth(b'{"a": [1, {"b": []}]}') == 4
    assert json_depth(b'{"notes": "[[[[{{{{ \\" [[["}') == 1
    assert json_depth(b"[" * 1000 + b"]" * 1000) == 1000


def test_path_and_query_checks() -> None:
    assert path_problem("/v1/p/migrations/0b1c") is None
    assert path_problem("/v1/p/migrations/\u00e9t\u00e9")
    assert path_problem("/v1/p/endpoints/x/instances/" + "A" * 2000)
    assert query_problem(b"limit=10&marker=abc&name=%C3%A9t%C3%A9") is None
    for bad in (b"limit=-1", b"limit=1.5", b"limit=", b"marker=%00", b"status=%ff"):
        assert query_problem(bad), bad


def test_cancel_force_is_a_strict_boolean() -> None:
    assert CancelArgs.model_validate({"force": True}).force is True
    with pytest.raises(ValidationError):
        CancelArgs.model_validate({"force": "yes"})


async def test_middleware_answers_before_the_route_runs() -> None:
    async def echo(request: Request) -> JSONResponse:
        return JSONResponse({"size": len(await request.body())})

    app = Starlette(routes=[Route("/echo", echo, methods=["POST"])],
                    middleware=[Middleware(RequestLimits, max_body=1000, max_depth=3)])
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as http:
        assert (await http.post("/echo", content=b'{"a": [1]}')).json() == {"size": 10}
        assert (await http.post("/echo", content=b"x" * 1001)).status_code == 413
        deep = await http.post("/echo", content=b'{"a": [[[1]]]}')
        assert deep.status_code == 400 and deep.json()["error"]["fault"] == "badRequest"
        bad = await http.post("/echo", content=b"{}", headers={"Content-Length": "abc"})
        assert bad.status_code == 400 and "Content-Length" in bad.json()["error"]["message"]
