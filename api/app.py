"""The Starlette application: Coriolis v1 routes, error mapping, lifespan-held clients."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from api import endpoints, health, migrations, openapi, providers, transfer_routes
from api.auth import NoAuth
from api.deps import AuthStrategy, Deps
from api.errors import (
    ApiError,
    handle_api_error,
    handle_http_exception,
    handle_sterna_error,
    handle_unexpected,
)
from api.limits import RequestLimits
from api.observe import Observe
from api.policy import Policy
from core import tracing
from core.crypto import SecretBox
from core.errors import SternaError
from core.settings import Settings
from core.temporal import connect
from store.db import Database
from store.repo import Store

V = "/v1/{project_id}"
#: the web console: static HTML and JS modules that call the public REST API above, nothing else
CONSOLE = Path(__file__).parent / "console"


async def versions(_request: Request) -> JSONResponse:
    return JSONResponse({"versions": [{"id": "v1", "status": "CURRENT", "links": [{"rel": "self", "href": "/v1/"}]}]})


async def openapi_json(_request: Request) -> JSONResponse:
    return JSONResponse(openapi.document(ROUTES))


ROUTES = [
    Route("/", versions),
    Route("/openapi.json", openapi_json),
    Route("/healthz", health.healthz, methods=["GET"]),
    Route("/readyz", health.readyz, methods=["GET"]),
    Route("/metrics", health.metrics, methods=["GET"]),
    Route(f"{V}/migrations", migrations.index, methods=["GET"]),
    Route(f"{V}/migrations", migrations.create, methods=["POST"]),
    Route(f"{V}/migrations/detail", migrations.detail, methods=["GET"]),
    Route(f"{V}/migrations/{{id}}", migrations.show, methods=["GET"]),
    Route(f"{V}/migrations/{{id}}", migrations.delete, methods=["DELETE"]),
    Route(f"{V}/migrations/{{id}}/actions", migrations.actions, methods=["POST"]),
    # The seed's singular form, kept for scripts written against older Coriolis READMEs.
    Route(f"{V}/migrations/{{id}}/action", migrations.actions, methods=["POST"]),
    Route(f"{V}/endpoints", endpoints.index, methods=["GET"]),
    Route(f"{V}/endpoints", endpoints.create, methods=["POST"]),
    Route(f"{V}/endpoints/{{id}}", endpoints.show, methods=["GET"]),
    Route(f"{V}/endpoints/{{id}}", endpoints.update, methods=["PUT"]),
    Route(f"{V}/endpoints/{{id}}", endpoints.delete, methods=["DELETE"]),
    Route(f"{V}/endpoints/{{id}}/actions", endpoints.actions, methods=["POST"]),
    Route(f"{V}/endpoints/{{id}}/instances", endpoints.instances, methods=["GET"]),
    Route(f"{V}/endpoints/{{id}}/instances/{{instance_id}}", endpoints.instance, methods=["GET"]),
    Route(f"{V}/endpoints/{{id}}/networks", endpoints.networks, methods=["GET"]),
    Route(f"{V}/endpoints/{{id}}/storage", endpoints.storage, methods=["GET"]),
    Route(f"{V}/endpoints/{{id}}/destination-options", endpoints.destination_options, methods=["GET"]),
    Route(f"{V}/endpoints/{{id}}/source-options", endpoints.source_options, methods=["GET"]),
    Route(f"{V}/providers", providers.list_providers, methods=["GET"]),
    Route(f"{V}/providers/{{platform}}/schemas/{{provider_type:int}}", providers.schemas, methods=["GET"]),
    *transfer_routes.routes(V),
]


def auth_strategy(settings: Settings) -> AuthStrategy:
    if settings.auth_strategy == "noauth":
        return NoAuth()
    if settings.auth_strategy == "keystone":
        from api.keystone import KeystoneAuth

        return KeystoneAuth(settings)
    raise RuntimeError(f"auth_strategy '{settings.auth_strategy}' is not available in this build")


def create_app(settings: Settings) -> Starlette:
    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        database = Database(settings.db_url)
        store = Store(database, SecretBox(settings))
        if settings.db_upgrade_on_start:
            database.upgrade()
            store.seal_plain_environments()
        # Clients are per process ("clients do not work across forks"), so they live here. Lazy: the API
        # starts (and /healthz answers, /readyz says why not) while Temporal is still down.
        temporal = await connect(settings, lazy=True, service="sterna-api")
        auth = auth_strategy(settings)
        app.state.deps = Deps(settings=settings, store=store, temporal=temporal,
                              auth=auth, policy=Policy.from_file(settings.policy_file),
                              keystone=getattr(auth, "service", None))
        yield
        # uvicorn runs this on SIGTERM, after the last request: the spans of those requests leave now.
        await asyncio.to_thread(tracing.shutdown)
        database.dispose()

    return Starlette(
        # The console is no API route: it stays out of ROUTES, hence out of the OpenAPI document.
        routes=[*ROUTES, Mount("/console", StaticFiles(directory=CONSOLE, html=True), name="console")],
        lifespan=lifespan,
        middleware=[Middleware(Observe),
                    Middleware(RequestLimits, max_body=settings.api_max_body_bytes,
                               max_depth=settings.api_max_json_depth)],
        exception_handlers={
            ApiError: handle_api_error,
            SternaError: handle_sterna_error,
            HTTPException: handle_http_exception,
            Exception: handle_unexpected,
        },
    )


def main() -> None:
    import uvicorn

    from core.logs import setup_logging
    from core.settings import get_settings

    settings = get_settings()
    # The host id a worker on this host would use (the hostname unless STERNA_WORKER_HOST_ID says otherwise).
    setup_logging("api", settings.worker_host_id)
    # Our middleware writes one structured line per request; uvicorn's access log would be a second one.
    # Keep-alive 75 s (nginx's default), not uvicorn's 5 s: clients that poll (``--watch``, the SDK's
    # waits, coriolis-web) reuse a connection between polls, and a poll sent just as the server closes
    # an idle one fails with "Server disconnected" (seen on a loaded machine, polls 7 s apart).
    uvicorn.run(create_app(settings), host=settings.api_host, port=settings.api_port, log_config=None,
                access_log=False, timeout_keep_alive=75)
