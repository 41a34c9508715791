"""``sterna keystone register``: put Sterna in a Keystone catalog (also ``deploy/keystone-register``).

It creates, or leaves as they are when they exist:

* the service user (default ``sterna``) in the ``service`` project with the ``service`` role,
  which is what lets it validate callers' tokens and be the trustee of migration trusts;
* the ``migration`` service (Coriolis's service type, so ``coriolis`` clients find it);
* its public, internal and admin endpoints ``http://HOST:7667/v1/%(tenant_id)s``.

The admin credentials come from the usual ``OS_*`` variables (``OS_AUTH_URL``, ``OS_USERNAME``,
``OS_PASSWORD``, ``OS_PROJECT_NAME``, ``OS_USER_DOMAIN_ID``/``_NAME``, ``OS_PROJECT_DOMAIN_ID``/``_NAME``).
"""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass
from typing import Any

SERVICE_TYPE = "migration"


@dataclass
class Registration:
    service_id: str
    user_id: str
    project_id: str
    endpoints: dict[str, str]


def admin_session(auth_url: str | None = None) -> Any:
    from keystoneauth1.identity import v3
    from keystoneauth1.session import Session

    env = os.environ
    url = auth_url or env.get("OS_AUTH_URL")
    if not url:
        raise SystemExit("Set OS_AUTH_URL (and the other OS_* admin credentials) or pass --os-auth-url")
    return Session(auth=v3.Password(
        auth_url=url, username=env.get("OS_USERNAME", "admin"), password=env.get("OS_PASSWORD", ""),
        project_name=env.get("OS_PROJECT_NAME", "admin"),
        user_domain_id=env.get("OS_USER_DOMAIN_ID") if not env.get("OS_USER_DOMAIN_NAME") else None,
        user_domain_name=env.get("OS_USER_DOMAIN_NAME"),
        project_domain_id=env.get("OS_PROJECT_DOMAIN_ID") if not env.get("OS_PROJECT_DOMAIN_NAME") else None,
        project_domain_name=env.get("OS_PROJECT_DOMAIN_NAME"),
    ))


def register(session: Any, *, url: str, region: str = "RegionOne", service_name: str = "sterna",
             username: str = "sterna", password: str, project: str = "service",
             domain_id: str = "default") -> Registration:
    """Idempotently create the service user, the ``migration`` service and its three endpoints."""
    ks = str(session.get_endpoint(service_type="identity", interface="public")).rstrip("/")
    if not ks.endswith("/v3"):
        ks += "/v3"

    def find(coll: str, **query: str) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = session.get(f"{ks}/{coll}", params=query).json()[coll]
        return found

    def create(coll: str, key: str, body: dict[str, Any]) -> dict[str, Any]:
        made: dict[str, Any] = session.post(f"{ks}/{coll}", json={key: body}).json()[key]
        return made

    def get_or_create(coll: str, key: str, body: dict[str, Any], **query: str) -> dict[str, Any]:
        found = find(coll, **query)
        return found[0] if found else create(coll, key, body)

    proj = get_or_create("projects", "project", {"name": project, "domain_id": domain_id},
                         name=project, domain_id=domain_id)
    user = get_or_create("users", "user", {"name": username, "password": password, "domain_id": domain_id,
                                           "default_project_id": proj["id"]}, name=username, domain_id=domain_id)
    # An existing user keeps working with the password Sterna is configured with.
    session.patch(f"{ks}/users/{user['id']}", json={"user": {"password": password}})
    role = get_or_create("roles", "role", {"name": "service"}, name="service")
    session.put(f"{ks}/projects/{proj['id']}/users/{user['id']}/roles/{role['id']}")
    service = next((s for s in find("services", type=SERVICE_TYPE) if s.get("name") == service_name), None)
    if service is None:
        service = create("services", "service", {"type": SERVICE_TYPE, "name": service_name,
                                                 "description": "Sterna cloud migration (Coriolis v1 API)"})
    endpoint_url = f"{url.rstrip('/')}/v1/%(tenant_id)s"
    existing = {e["interface"]: e for e in find("endpoints", service_id=service["id"])
                if e.get("region_id", e.get("region")) == region}
    for interface in ("public", "internal", "admin"):
        if interface in existing:
            if existing[interface]["url"] != endpoint_url:
                session.patch(f"{ks}/endpoints/{existing[interface]['id']}", json={"endpoint": {"url": endpoint_url}})
        else:
            create("endpoints", "endpoint", {"service_id": service["id"], "interface": interface,
                                             "region_id": region, "url": endpoint_url})
    return Registration(service_id=service["id"], user_id=user["id"], project_id=proj["id"],
                        endpoints={i: endpoint_url for i in ("public", "internal", "admin")})


def add_parser(sub: Any) -> None:
    p = sub.add_parser("keystone", help="Keystone integration")
    ksub = p.add_subparsers(dest="keystone_action", required=True)
    r = ksub.add_parser("register", help="create the migration service, its endpoints and the service user")
    r.add_argument("--host", required=True, help="host name clients reach the API at")
    r.add_argument("--port", type=int, default=7667)
    r.add_argument("--scheme", default="http", choices=["http", "https"])
    r.add_argument("--region", default="RegionOne")
    r.add_argument("--service-name", default="sterna")
    r.add_argument("--service-user", default="sterna")
    r.add_argument("--service-password", default=os.environ.get("STERNA_KEYSTONE_PASSWORD"),
                   help="default: $STERNA_KEYSTONE_PASSWORD")
    r.add_argument("--service-project", default="service")
    r.add_argument("--os-auth-url", default=None, help="default: $OS_AUTH_URL")
    r.set_defaults(func=cmd_keystone)


def cmd_keystone(args: argparse.Namespace) -> int:
    if not args.service_password:
        raise SystemExit("--service-password (or STERNA_KEYSTONE_PASSWORD) is required")
    session = admin_session(args.os_auth_url)
    reg = register(session, url=f"{args.scheme}://{args.host}:{args.port}", region=args.region,
                   service_name=args.service_name, username=args.service_user, password=args.service_password,
                   project=args.service_project)
    auth_url = str(session.get_endpoint(service_type="identity", interface="public")).rstrip("/")
    print(f"service '{args.service_name}' (type {SERVICE_TYPE}) {reg.service_id}")
    for interface, endpoint in reg.endpoints.items():
        print(f"  {interface:8} {endpoint}")
    print(f"service user '{args.service_user}' {reg.user_id} (role 'service' in project {args.service_project})")
    print("Configure the API and workers with:")
    print("  STERNA_AUTH_STRATEGY=keystone")
    print(f"  STERNA_KEYSTONE_AUTH_URL={auth_url}")
    print(f"  STERNA_KEYSTONE_USERNAME={args.service_user}  STERNA_KEYSTONE_PROJECT_NAME={args.service_project}")
    print("  STERNA_KEYSTONE_PASSWORD=<the service password>")
    return 0
