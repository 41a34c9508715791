"""Authentication strategies. ``noauth`` trusts the project id in the path (PoCs only)."""

from __future__ import annotations

from starlette.requests import Request

from api.context import RequestContext


class NoAuth:
    """Accepts and ignores any X-Auth-Token; the project comes from the URL, as Coriolis' -N mode."""

    name = "noauth"

    async def authenticate(self, request: Request, project_id: str) -> RequestContext:
        return RequestContext(project_id=project_id, user_id=None, roles=["admin"], is_admin=False)
