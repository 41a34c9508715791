"""The caller of a request, as authentication established it."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class RequestContext:
    project_id: str
    user_id: str | None = None
    roles: list[str] = field(default_factory=list)
    is_admin: bool = False
    #: the caller's token, kept for same-cloud destinations; never stored or logged
    auth_token: str | None = None
    #: the project the token is scoped to (Keystone); differs from ``project_id`` only for admins
    token_project_id: str | None = None

    @property
    def scope(self) -> str | None:
        """Project filter for record queries: admins see every project."""
        return None if self.is_admin else self.project_id
