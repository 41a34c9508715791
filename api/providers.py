"""``/providers``: the platforms this installation knows and their Coriolis type bits."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse

from api.deps import context, db
from api.errors import ApiError
from providers.base import EndpointProvider, ExportProvider, ImportProvider
from providers.registry import platforms, provider_class

SCHEMA_KEYS = {16: "connection_info_schema", 4: "destination_environment_schema", 8: "source_environment_schema"}


async def list_providers(request: Request) -> JSONResponse:
    await context(request, "migration:providers:list")

    def collect() -> dict[str, dict[str, list[int]]]:
        out = {}
        for name in platforms():
            try:
                out[name] = {"types": provider_class(name).provider_types()}
            except ImportError:  # an optional SDK missing: the platform is not offered
                continue
        return out

    return JSONResponse({"providers": await db(collect)})


async def schemas(request: Request) -> JSONResponse:
    await context(request, "migration:providers:list")
    platform = request.path_params["platform"]
    kind = int(request.path_params["provider_type"])
    if kind not in SCHEMA_KEYS:
        raise ApiError(404, f"No schema for provider type {kind}; known types: 16, 4, 8")
    cls = provider_class(platform)
    capability, getter = {16: (EndpointProvider, "connection_info_schema"),
                          4: (ImportProvider, "destination_environment_schema"),
                          8: (ExportProvider, "source_environment_schema")}[kind]
    if not issubclass(cls, capability):
        raise ApiError(404, f"Provider '{platform}' has no schema of type {kind}")
    return JSONResponse({"schemas": {SCHEMA_KEYS[kind]: getattr(cls, getter)()}})
