"""``/providers``: the platforms this installation knows and their Coriolis type bits."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse

from api.deps import context, db
from api.errors import ApiError
from providers.base import DestinationOptionsProvider, EndpointProvider, ExportProvider, ImportProvider
from providers.registry import platforms, provider_class

SCHEMA_KEYS = {16: "connection_info_schema", 4: "destination_environment_schema", 8: "source_environment_schema"}


async def list_providers(request: Request) -> JSONResponse:
    await context(request)

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
    platform = request.path_params["platform"]
    kind = int(request.path_params["provider_type"])
    cls = provider_class(platform)
    if kind == 16 and issubclass(cls, EndpointProvider):
        schema = cls.connection_info_schema()
    elif kind == 4 and issubclass(cls, ImportProvider):
        schema = cls.destination_environment_schema()
    elif kind == 8 and issubclass(cls, ExportProvider):
        schema = cls.source_environment_schema()
    elif kind in (4, 8, 16) or issubclass(cls, DestinationOptionsProvider):
        raise ApiError(404, f"Provider '{platform}' has no schema of type {kind}")
    else:
        raise ApiError(404, f"Unknown provider type {kind}")
    return JSONResponse({"schemas": {SCHEMA_KEYS[kind]: schema}})
