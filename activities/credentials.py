"""Turning a stored ``connection_info`` into credentials, inside the activity that needs them.

Three forms are stored:

* inline JSON credentials: used as they are;
* a Barbican reference, ``{"secret_ref": "<href>"}`` (Coriolis) or ``{"secret_id": "<uuid>"}``
  (the seed): the payload (the JSON connection dict) is read here, with a session scoped to the
  owning project through the migration's Keystone trust, and lives only in this process's memory;
* nothing (``{}``) for an ``openstack`` endpoint: the "same cloud" that authenticated the caller.
  The provider gets ``{"session": <trust-scoped keystoneauth1 session>}``.

Only the trust *id* is stored (record DB column ``migrations.trust_id``); using it needs the
service user's password, which only the processes' settings hold. Tokens and payloads never
enter Temporal (workflow inputs, results, heartbeats), the record DB or a log line.
"""

from __future__ import annotations

import json
import re
from typing import TYPE_CHECKING, Any

from core.errors import AuthenticationFailed, ConnectionFailed, InvalidInput, NotFound
from core.keystone import needs_keystone as needs_keystone
from core.keystone import secret_reference

if TYPE_CHECKING:
    from keystoneauth1.session import Session

    from core.keystone import KeystoneService

_UUID = re.compile(r"[0-9a-fA-F-]{32,36}")


def resolve(platform: str, info: dict[str, Any], keystone: KeystoneService | None,
            trust_id: str | None) -> dict[str, Any]:
    """The provider-ready connection_info (see the module docstring). Blocking: run in a thread."""
    if not needs_keystone(platform, info):
        return info
    ref = secret_reference(info)
    what = f"Barbican secret {_secret_id(ref)}" if ref else "A same-cloud (empty connection_info) endpoint"
    if keystone is None:
        raise InvalidInput(f"{what} needs Keystone: run Sterna with auth_strategy = keystone "
                           "(STERNA_KEYSTONE_AUTH_URL and the service user's credentials)")
    if not trust_id:
        raise AuthenticationFailed(f"{what} is read through the migration's Keystone trust, and there is none "
                                   "(was the migration created with a Keystone token?)")
    session = keystone.trust_session(trust_id)
    if ref is None:
        return {"session": session}
    return fetch_secret(session, ref)


def _secret_id(ref: str | None) -> str:
    tail = (ref or "").rstrip("/").rsplit("/", 1)[-1]
    return tail if _UUID.fullmatch(tail) else "(malformed reference)"


def fetch_secret(session: Session, ref: str) -> dict[str, Any]:
    """Read a Barbican secret's payload as a JSON object, with ``session``'s project scope."""
    from keystoneauth1 import exceptions as ks_exc

    secret_id = _secret_id(ref)
    if secret_id == "(malformed reference)":
        raise InvalidInput("connection_info's secret reference is not a Barbican secret href or uuid")
    if ref.startswith(("http://", "https://")):
        href = ref.rstrip("/")
    else:
        try:
            base = session.get_endpoint(service_type="key-manager", interface="public")
        except ks_exc.EndpointNotFound as exc:
            raise InvalidInput("The Keystone catalog has no key-manager (Barbican) endpoint") from exc
        href = f"{str(base).rstrip('/')}/v1/secrets/{secret_id}"
    project = session.get_project_id()
    try:
        meta = session.get(href, headers={"Accept": "application/json"}, raise_exc=False)
        _check(meta.status_code, secret_id, project)
        content_type = (meta.json().get("content_types") or {}).get("default", "text/plain")
        r = session.get(f"{href}/payload", headers={"Accept": content_type}, raise_exc=False)
        _check(r.status_code, secret_id, project)
    except ks_exc.ConnectFailure as exc:
        raise ConnectionFailed(f"Barbican is unreachable while reading secret {secret_id}") from exc
    try:
        payload = json.loads(r.content)
    except (ValueError, UnicodeDecodeError):
        # "from None": the decode error quotes the payload, which must not reach a task error.
        raise InvalidInput(f"Barbican secret {secret_id} does not hold a JSON connection_info object") from None
    if not isinstance(payload, dict):
        raise InvalidInput(f"Barbican secret {secret_id} does not hold a JSON connection_info object")
    return payload


def _check(status: int, secret_id: str, project: str | None) -> None:
    if status == 200:
        return
    if status == 403:
        raise AuthenticationFailed(f"Barbican secret {secret_id} belongs to another project: project {project} "
                                   "may not read it (HTTP 403)")
    if status == 404:
        raise NotFound(f"Barbican secret {secret_id} does not exist")
    if status == 401:
        raise AuthenticationFailed(f"Barbican refused the migration's credentials for secret {secret_id}")
    raise ConnectionFailed(f"Barbican answered HTTP {status} for secret {secret_id}")
