"""What both ways of running a ``POST /migrations`` check and write first: the two sides
(stored endpoints or inline ones), the environments and the row's columns."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from api import environments
from api.context import RequestContext
from api.deps import Deps
from api.errors import ApiError
from api.schemas import MigrationCreate
from core import morph_options
from core.limits import bandwidth_limit
from providers.base import EndpointProvider, ExportProvider, ImportProvider
from providers.registry import provider_class
from store.environments import Marked
from store.models import Endpoint
from workflows.types import Status


def _check_role(platform: str, capability: type[Any], role: str) -> None:
    cls = provider_class(platform)
    if not issubclass(cls, capability):
        raise ApiError(400, f"Provider '{platform}' can't be a migration {role}")


def _check_connection_info(platform: str, info: dict[str, Any], role: str) -> None:
    """The schema's required keys, checked before anything is written (full validation runs on a worker)."""
    cls = provider_class(platform)
    schema = cls.connection_info_schema() if issubclass(cls, EndpointProvider) else {}
    missing = [k for k in schema.get("required", []) if k not in info]
    if missing:
        raise ApiError(400, f"The {role}'s connection_info for '{platform}' lacks: {', '.join(missing)}")


def _side(d: Deps, ctx: RequestContext, endpoint_id: str | None, inline: Any, capability: type[Any],
          role: str, migration_id: str) -> tuple[str, str, Endpoint | None]:
    """Resolve one side to (endpoint id, platform, new internal endpoint row or None)."""
    if endpoint_id is not None:
        endpoint = d.store.get_endpoint(ctx.scope, endpoint_id)
        _check_role(endpoint.type, capability, role)
        return endpoint.id, endpoint.type, None
    _check_role(inline.type, capability, role)
    _check_connection_info(inline.type, inline.connection_info or {}, role)
    row = d.store.new_endpoint_row(
        connection_info=inline.connection_info or {}, project_id=ctx.project_id, user_id=ctx.user_id,
        name=f"migration-{migration_id}-{role}", type=inline.type, internal=True,
        description=f"Inline {role} of migration {migration_id}",
    )
    row.id = str(uuid.uuid4())
    return row.id, inline.type, row


@dataclass
class Prepared:
    """A migration's row as checked: its columns, its inline endpoints (unsaved), its platforms."""

    fields: dict[str, Any]
    new_endpoints: list[Endpoint]
    marked: Marked
    origin_type: str
    destination_type: str


def prepare(d: Deps, ctx: RequestContext, req: MigrationCreate, migration_id: str,
            trust_id: str | None) -> Prepared:
    """Shared by both ways of running a migration (``api.live_migrations``): one row, either type."""
    origin_id, origin_type, origin_row = _side(d, ctx, req.origin_endpoint_id, req.origin, ExportProvider,
                                               "origin", migration_id)
    dest_id, dest_type, dest_row = _side(d, ctx, req.destination_endpoint_id, req.destination, ImportProvider,
                                         "destination", migration_id)
    if origin_id == dest_id:
        raise ApiError(400, "SameDestination: the origin and destination endpoints must differ")
    source_env = dict(req.source_environment or (req.origin.source_environment if req.origin else None) or {})
    dest_env = dict(req.destination_environment
                    or (req.destination.target_environment if req.destination else None) or {})
    # Checked here too, so that a bad value is a 400 now rather than a failed migration later.
    bandwidth_limit(source_env, "source_environment")
    bandwidth_limit(dest_env, "destination_environment")
    morph_options.check(dest_env, "destination_environment")
    environments.check(source_environment=source_env, destination_environment=dest_env)
    network_map = dict(req.network_map or dest_env.pop("network_map", None) or {})
    storage_mappings = dict(req.storage_mappings or dest_env.pop("storage_mappings", None) or {})
    fields = dict(
        project_id=ctx.project_id, user_id=ctx.user_id, origin_endpoint_id=origin_id,
        destination_endpoint_id=dest_id, instances=req.instances, source_environment=source_env,
        destination_environment=dest_env, network_map=network_map, storage_mappings=storage_mappings,
        user_scripts=req.user_scripts or {}, notes=req.notes, shutdown_instances=bool(req.shutdown_instances),
        skip_os_morphing=bool(req.skip_os_morphing), replication_count=req.replication_count or 1,
        last_execution_status=Status.RUNNING, trust_id=trust_id,
        # What Coriolis calls it since 2024: a transfer's live migration, executed once and deployed.
        scenario="live_migration",
    )
    return Prepared(fields, [r for r in (origin_row, dest_row) if r is not None],
                    environments.marked(origin_type, dest_type), origin_type, dest_type)
