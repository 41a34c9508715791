"""Sterna's Keystone service user: token validation, trusts, and trust-scoped sessions.

One instance per process (API or worker). The service user (``STERNA_KEYSTONE_*``) validates
callers' tokens, is the trustee of each migration's trust, and reads Barbican secrets and
same-cloud resources through trust-scoped sessions, so work that outlives the caller's token
(multi-hour copies) keeps the caller's identity and project.

Nothing here logs a token, a password or a secret payload.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

from core.errors import AuthenticationFailed, ConnectionFailed, InvalidInput
from core.settings import Settings

if TYPE_CHECKING:
    from keystoneauth1.session import Session


#: platforms whose empty connection_info means "the cloud of the caller's Keystone"
SAME_CLOUD_PLATFORMS = frozenset({"openstack"})


def secret_reference(info: dict[str, Any]) -> str | None:
    """The Barbican reference of a connection_info (``secret_ref`` href or ``secret_id``), if any."""
    ref = info.get("secret_ref") or info.get("secret_id")
    return str(ref) if ref else None


def needs_keystone(platform: str, info: dict[str, Any]) -> bool:
    """Whether resolving ``info`` needs a trust-scoped Keystone session."""
    return secret_reference(info) is not None or (not info and platform in SAME_CLOUD_PLATFORMS)


class KeystoneService:
    def __init__(self, settings: Settings) -> None:
        if not settings.keystone_auth_url or not settings.keystone_password:
            raise InvalidInput("Keystone needs STERNA_KEYSTONE_AUTH_URL and STERNA_KEYSTONE_PASSWORD")
        self.settings = settings
        self.auth_url = settings.keystone_auth_url.rstrip("/")
        self._session: Session | None = None
        self._lock = threading.Lock()

    # -- the service user's own session ----------------------------------------------------------
    def _password(self, **scope: Any) -> Any:
        from keystoneauth1.identity import v3

        s = self.settings
        return v3.Password(auth_url=self.auth_url, username=s.keystone_username, password=s.keystone_password or "",
                           user_domain_id=s.keystone_user_domain_id, **scope)

    @property
    def session(self) -> Session:
        with self._lock:
            if self._session is None:
                from keystoneauth1.session import Session

                s = self.settings
                self._session = Session(auth=self._password(
                    project_name=s.keystone_project_name, project_domain_id=s.keystone_project_domain_id))
            return self._session

    def service_user_id(self) -> str:
        uid = self.session.get_user_id()
        if not uid:
            raise AuthenticationFailed("The Keystone service user could not authenticate")
        return str(uid)

    def validate_token(self, token: str) -> dict[str, Any] | None:
        """The token's body, or None when Keystone says it is unknown or expired."""
        from keystoneauth1 import exceptions as ks_exc

        try:
            r = self.session.get(f"{self.auth_url}/auth/tokens", headers={"X-Subject-Token": token},
                                 raise_exc=False)
        except ks_exc.ConnectFailure as exc:
            raise ConnectionFailed(f"Keystone at {self.auth_url} is unreachable") from exc
        if r.status_code in (401, 404):
            return None
        if r.status_code != 200:
            raise ConnectionFailed(f"Keystone token validation answered HTTP {r.status_code}")
        body: dict[str, Any] = r.json()
        return body

    # -- trusts ---------------------------------------------------------------------------------
    def create_trust(self, caller_token: str, trustor_user_id: str, project_id: str, roles: list[str]) -> str:
        """Delegate the caller's roles on ``project_id`` to the service user; returns the trust id.

        Impersonation is on, so Barbican and the clouds see the caller (as Coriolis does).
        """
        import httpx

        body = {"trust": {"trustor_user_id": trustor_user_id, "trustee_user_id": self.service_user_id(),
                          "project_id": project_id, "impersonation": True,
                          "roles": [{"name": r} for r in roles]}}
        r = httpx.post(f"{self.auth_url}/OS-TRUST/trusts", json=body, headers={"X-Auth-Token": caller_token},
                       timeout=30)
        if r.status_code != 201:
            raise AuthenticationFailed(f"Keystone refused to create a trust for project {project_id} "
                                       f"(HTTP {r.status_code})")
        return str(r.json()["trust"]["id"])

    def delete_trust(self, trust_id: str) -> bool:
        """Delete a trust; True if it existed. Keystone lets the trustor delete it, and an
        impersonating trust-scoped token *is* the trustor, so the trust revokes itself."""
        import httpx

        try:
            token = str(self.trust_session(trust_id).get_token())
        except AuthenticationFailed:
            return False
        r = httpx.delete(f"{self.auth_url}/OS-TRUST/trusts/{trust_id}", headers={"X-Auth-Token": token},
                         timeout=30)
        if r.status_code in (204, 404):
            return r.status_code == 204
        raise AuthenticationFailed(f"Keystone refused to delete trust {trust_id} (HTTP {r.status_code})")

    def trust_session(self, trust_id: str) -> Session:
        """A session acting as the trustor on the trust's project; re-authenticates on expiry."""
        from keystoneauth1 import exceptions as ks_exc
        from keystoneauth1.session import Session

        sess = Session(auth=self._password(trust_id=trust_id))
        try:
            sess.get_token()
        except ks_exc.Unauthorized as exc:
            raise AuthenticationFailed(f"Keystone trust {trust_id} is no longer valid") from exc
        except ks_exc.ConnectFailure as exc:
            raise ConnectionFailed(f"Keystone at {self.auth_url} is unreachable") from exc
        return sess
