"""``auth_strategy = keystone``: callers' X-Auth-Token validated against Keystone.

The API holds a session of its service user (``STERNA_KEYSTONE_*``) and validates each caller
token with ``GET /v3/auth/tokens`` + ``X-Subject-Token``, as keystonemiddleware does for WSGI
services (it cannot wrap an ASGI app). Validations are cached per token for
``keystone_token_cache_ttl`` seconds and never past the token's own expiry.

A missing, unknown or expired token answers 401. A token may act on the project in the URL
only if it is scoped to that project, unless it carries the ``admin`` role.
"""

from __future__ import annotations

import hashlib
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request

from api.context import RequestContext
from api.errors import ApiError, Forbidden, Unauthorized
from core.errors import ConnectionFailed
from core.keystone import KeystoneService
from core.settings import Settings


@dataclass(frozen=True)
class _Validated:
    user_id: str
    project_id: str | None
    roles: list[str]
    expires: float


class KeystoneAuth:
    """Authenticates requests with Keystone tokens; see the module docstring."""

    name = "keystone"

    def __init__(self, settings: Settings, service: KeystoneService | None = None) -> None:
        self.settings = settings
        self.service = service or KeystoneService(settings)
        self._cache: dict[str, _Validated] = {}
        self._lock = threading.Lock()

    async def authenticate(self, request: Request, project_id: str) -> RequestContext:
        token = request.headers.get("x-auth-token")
        if not token:
            raise Unauthorized("Authentication required: send a Keystone token in X-Auth-Token")
        try:
            found = await run_in_threadpool(self._validate, token)
        except ConnectionFailed as exc:
            raise ApiError(503, f"Keystone is unavailable: {exc.message}") from exc
        is_admin = "admin" in {r.lower() for r in found.roles}
        if found.project_id != project_id and not is_admin:
            raise Forbidden(f"The token is scoped to another project than {project_id}")
        return RequestContext(project_id=project_id, user_id=found.user_id, roles=list(found.roles),
                              is_admin=is_admin, auth_token=token, token_project_id=found.project_id)

    def _validate(self, token: str) -> _Validated:
        # The cache key is a digest: raw tokens are bearer credentials, even in memory maps.
        key = hashlib.sha256(token.encode()).hexdigest()
        now = time.time()
        with self._lock:
            hit = self._cache.get(key)
            if hit is not None and hit.expires > now:
                return hit
            self._cache.pop(key, None)
        body = self.service.validate_token(token)
        if body is None:
            raise Unauthorized("The token is invalid or has expired")
        tok = body["token"]
        expires_at = _parse_time(tok.get("expires_at"))
        if expires_at is not None and expires_at <= now:
            raise Unauthorized("The token is invalid or has expired")
        project = tok.get("project") or {}
        found = _Validated(
            user_id=tok["user"]["id"], project_id=project.get("id"),
            roles=[r["name"] for r in tok.get("roles", [])],
            expires=min(now + self.settings.keystone_token_cache_ttl, expires_at or float("inf")),
        )
        with self._lock:
            if len(self._cache) > 10000:  # bounded: drop the expired ones, then everything
                self._cache = {k: v for k, v in self._cache.items() if v.expires > now}
                if len(self._cache) > 10000:
                    self._cache.clear()
            self._cache[key] = found
        return found


def _parse_time(value: Any) -> float | None:
    if not isinstance(value, str):
        return None
    try:
        stamp = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    if stamp.tzinfo is None:
        stamp = stamp.replace(tzinfo=UTC)
    return stamp.timestamp()


def require_token(ctx: RequestContext) -> str:
    if not ctx.auth_token:
        raise ApiError(401, "This operation needs a Keystone token")
    return ctx.auth_token
