"""A Keystone session and the REST calls the provider makes, with errors mapped to ``core.errors``.

Plain keystoneauth1 adapters over the documented APIs (compute v2.1, networking v2.0, image v2)
rather than openstacksdk's resource layer: the provider needs a dozen calls, streamed image
bodies and exact control of what is sent, and every call here is one HTTP request.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from typing import Any

from core.errors import (
    AuthenticationFailed,
    ConnectionFailed,
    InvalidInput,
    NotFound,
    ProviderError,
    ProviderTransient,
    TransferError,
)
from core.polling import poll_until

#: compute microversion: 2.45 makes createImage answer with the image id in the body
COMPUTE_MICROVERSION = "2.45"


def make_session(info: Mapping[str, Any]) -> Any:
    """A keystoneauth1 session: the resolved same-cloud one, or one from inline credentials."""
    if info.get("session") is not None:
        return info["session"]
    from keystoneauth1.identity import v3
    from keystoneauth1.session import Session

    missing = [k for k in ("auth_url", "username", "password") if not info.get(k)]
    if missing:
        raise InvalidInput(f"openstack connection_info lacks {', '.join(missing)} "
                           "(or leave it empty to use the caller's own cloud)")
    if not (info.get("project_name") or info.get("project_id")):
        raise InvalidInput("openstack connection_info needs project_name or project_id")
    auth = v3.Password(
        auth_url=info["auth_url"], username=info["username"], password=info["password"],
        project_name=info.get("project_name"), project_id=info.get("project_id"),
        user_domain_name=info.get("user_domain_name"),
        user_domain_id=info.get("user_domain_id") or (None if info.get("user_domain_name") else "default"),
        project_domain_name=info.get("project_domain_name"),
        project_domain_id=info.get("project_domain_id") or (None if info.get("project_domain_name") else "default"),
    )
    verify: Any = not info.get("allow_untrusted", False)
    if info.get("cafile") and verify:
        verify = info["cafile"]
    return Session(auth=auth, verify=verify)


class Cloud:
    """The services of one OpenStack project: compute, network, image."""

    def __init__(self, info: Mapping[str, Any]) -> None:
        self.session = make_session(info)
        self.region = info.get("region_name")
        self.interface = info.get("interface", "public")

    @property
    def verify_tls(self) -> bool | str:
        """The session's certificate check (``allow_untrusted``, ``cafile``), for the image data path."""
        verify: bool | str = self.session.verify
        return verify

    def endpoint(self, service_type: str) -> str:
        from keystoneauth1 import exceptions as ks_exc

        try:
            url = self.session.get_endpoint(service_type=service_type, interface=self.interface,
                                            region_name=self.region)
        except ks_exc.Unauthorized as exc:
            raise AuthenticationFailed("Keystone refused the OpenStack credentials") from exc
        except ks_exc.ConnectFailure as exc:
            raise ConnectionFailed("Keystone is unreachable") from exc
        except ks_exc.EndpointNotFound:
            url = None
        if not url:
            raise InvalidInput(f"The Keystone catalog has no '{service_type}' endpoint"
                               + (f" in region {self.region}" if self.region else ""))
        return str(url).rstrip("/")

    def has(self, service_type: str) -> bool:
        try:
            self.endpoint(service_type)
        except InvalidInput:
            return False
        return True

    def token(self) -> str:
        from keystoneauth1 import exceptions as ks_exc

        try:
            return str(self.session.get_token())
        except ks_exc.Unauthorized as exc:
            raise AuthenticationFailed("Keystone refused the OpenStack credentials") from exc
        except ks_exc.ConnectFailure as exc:
            raise ConnectionFailed("Keystone is unreachable") from exc

    def project_id(self) -> str:
        return str(self.session.get_project_id())

    def request(self, service_type: str, method: str, path: str, *, json: Any = None,
                headers: Mapping[str, str] | None = None, ok: tuple[int, ...] = (200, 201, 202, 204)) -> Any:
        """One call; returns the decoded JSON body (or None), raises a ``core.errors`` error."""
        from keystoneauth1 import exceptions as ks_exc

        url = self.endpoint(service_type) + path
        hdrs = dict(headers or {})
        if service_type == "compute":
            hdrs["OpenStack-API-Version"] = f"compute {COMPUTE_MICROVERSION}"
        try:
            r = self.session.request(url, method, json=json, headers=hdrs, raise_exc=False)
        except ks_exc.Unauthorized as exc:
            raise AuthenticationFailed("Keystone refused the OpenStack credentials") from exc
        except ks_exc.ConnectFailure as exc:
            raise ConnectionFailed(f"{service_type} endpoint {url} is unreachable") from exc
        if r.status_code in ok:
            return r.json() if r.content else None
        message = _message(r)
        what = f"{service_type} {method} {path}"
        if r.status_code in (401, 403):
            raise AuthenticationFailed(f"{what} was refused (HTTP {r.status_code}): {message}")
        if r.status_code == 404:
            raise NotFound(f"{what}: not found: {message}")
        if r.status_code in (400, 409):
            raise InvalidInput(f"{what} was rejected (HTTP {r.status_code}): {message}")
        if r.status_code in (413, 429) or r.status_code >= 500:
            raise ProviderTransient(f"{what} failed (HTTP {r.status_code}): {message}")
        raise ProviderError(f"{what} failed (HTTP {r.status_code}): {message}")

    def wait(self, what: str, get: Any, ready: set[str], failed: set[str], timeout: float,
             interval: float = 1.0, stop: threading.Event | None = None) -> dict[str, Any]:
        """Poll ``get()`` until its ``status`` is in ``ready``; raise on ``failed`` or timeout.

        ``stop`` set (the activity was cancelled) ends the wait at the next poll.
        """
        status = ""

        def arrived() -> dict[str, Any] | None:
            nonlocal status
            if stop is not None and stop.is_set():
                raise TransferError(f"stopped waiting for {what}: cancelled")
            obj: dict[str, Any] = get()
            status = str(obj.get("status", "")).lower()
            if status in ready:
                return obj
            if status in failed:
                detail = (obj.get("fault") or {}).get("message", "") if isinstance(obj.get("fault"), dict) else ""
                raise ProviderError(f"{what} went to status {status.upper()} {detail}".rstrip())
            return None

        found = poll_until(time.monotonic() + timeout, interval, arrived)
        if found is None:
            raise ProviderTransient(f"{what} is still {status.upper()} after {timeout:.0f}s")
        return found


def _message(r: Any) -> str:
    try:
        body = r.json()
    except ValueError:
        return str(r.text)[:300]
    if isinstance(body, dict):
        for value in body.values():
            if isinstance(value, dict) and "message" in value:
                return str(value["message"])[:300]
        if "message" in body:
            return str(body["message"])[:300]
    return str(body)[:300]
