"""A small in-repo fake of the OpenStack compute (Nova) and network (Neutron) APIs.

**Why a fake:** Nova does not run on a test machine as it stands (it needs RabbitMQ, placement,
Neutron, cells, conductor, scheduler and compute services; see peers-openstack.md). Keystone,
Glance and Barbican in these tests are the real servers; only compute and network are this fake.

**How faithful it is:**

* Only the calls the ``openstack`` provider makes, with the documented request and response
  shapes of compute API v2.1 and networking v2.0: ``GET /flavors/detail``, ``GET /servers/detail``,
  ``POST /servers``, ``GET|DELETE /servers/{id}``, ``POST /servers/{id}/action`` with
  ``os-getConsoleOutput``, ``os-stop`` (SHUTOFF at once) or ``createImage`` (2.45+ response body),
  ``GET /v2.0/networks`` and ``GET /v2.0/security-groups``. Anything else answers 404.
* Tokens are real: every request's ``X-Auth-Token`` is validated against the real Keystone with
  the fake's own service user (``nova``), as keystonemiddleware does in Nova, and servers are
  visible only in the token's project (trust-scoped tokens included). A bad token
  gets 401, as from Nova.
* Create validates what Nova validates for these fields: the flavor exists, every network
  uuid exists, every security group name exists, and the image (``imageRef`` or a
  ``block_device_mapping_v2`` entry with ``source_type=image``) exists **in the real Glance**,
  is ``active`` and is readable with the caller's token; otherwise 400, as Nova answers.
* Nothing boots. A server goes BUILD -> ACTIVE on the next GET. Its console log is synthetic:
  it states the image id, size and checksum that Glance reported, and ends with a login prompt.
* ``createImage`` is real data: the new Glance image gets the bytes of the server's disk,
  which is either the Glance image it booted from or a file seeded with ``add_server``.
* No volumes (Cinder): boot-from-volume requests are accepted and recorded (``destination_type
  volume``) but no volume exists anywhere; ``os-volume_attachments`` is not implemented.

Every create request body is kept in ``created`` so tests assert on what the provider sent.
"""

from __future__ import annotations

import json
import re
import threading
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx

FLAVORS = [
    {"id": "1", "name": "m1.tiny", "vcpus": 1, "ram": 512, "disk": 1},
    {"id": "2", "name": "m1.small", "vcpus": 1, "ram": 2048, "disk": 20},
    {"id": "3", "name": "m1.medium", "vcpus": 2, "ram": 4096, "disk": 40},
    {"id": "4", "name": "m1.large", "vcpus": 4, "ram": 8192, "disk": 80},
]
NETWORKS = [{"id": "0b9c4a52-3b6a-4bd3-9b6e-1c9b9a000001", "name": "private"},
            {"id": "0b9c4a52-3b6a-4bd3-9b6e-1c9b9a000002", "name": "public"}]
SECURITY_GROUPS = [{"id": "5e6f0000-0000-4000-8000-000000000001", "name": "default"},
                   {"id": "5e6f0000-0000-4000-8000-000000000002", "name": "web"}]


@dataclass
class FakeServer:
    id: str
    name: str
    project_id: str
    flavor: dict[str, Any]
    networks: list[dict[str, Any]]
    status: str = "BUILD"
    image_id: str | None = None
    disk_file: Path | None = None
    image_info: dict[str, Any] = field(default_factory=dict)
    metadata: dict[str, Any] = field(default_factory=dict)


class FakeNova:
    """Runs in a thread of the test process on a free loopback port."""

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self.auth_url = ""
        self.glance_url = ""
        self.servers: dict[str, FakeServer] = {}
        self.created: list[dict[str, Any]] = []
        self.lock = threading.Lock()
        self.httpd: ThreadingHTTPServer | None = None
        self._token = ""

    @property
    def url(self) -> str:
        assert self.httpd is not None
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def start(self) -> None:
        fake = self

        class Handler(_Handler):
            nova = fake

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def stop(self) -> None:
        if self.httpd is not None:
            self.httpd.shutdown()
            self.httpd.server_close()

    def add_server(self, project_id: str, name: str, disk_file: Path, flavor: str = "m1.small",
                   network: str = "private") -> FakeServer:
        """Seed an existing server (a migration source) whose disk holds ``disk_file``'s bytes."""
        net = next(n for n in NETWORKS if n["name"] == network)
        srv = FakeServer(id=str(uuid.uuid4()), name=name, project_id=project_id, status="ACTIVE",
                         flavor=next(f for f in FLAVORS if f["name"] == flavor), networks=[{"uuid": net["id"]}],
                         disk_file=disk_file)
        with self.lock:
            self.servers[srv.id] = srv
        return srv

    # -- helpers used by the handler ------------------------------------------------------------------
    def _service_token(self, renew: bool = False) -> str:
        """The fake's own service user token (``nova`` in project ``service``), as Nova's
        keystonemiddleware uses to validate callers' tokens."""
        with self.lock:
            if renew or not self._token:
                body = {"auth": {"identity": {"methods": ["password"], "password": {"user": {
                    "name": "nova", "password": "novapw", "domain": {"id": "default"}}}},
                    "scope": {"project": {"name": "service", "domain": {"id": "default"}}}}}
                r = httpx.post(f"{self.auth_url}/auth/tokens", json=body, timeout=30)
                r.raise_for_status()
                self._token = r.headers["X-Subject-Token"]
            return self._token

    def project_of(self, token: str | None) -> str | None:
        if not token:
            return None
        for renew in (False, True):
            r = httpx.get(f"{self.auth_url}/auth/tokens", timeout=30,
                          headers={"X-Auth-Token": self._service_token(renew), "X-Subject-Token": token})
            if r.status_code == 401 and not renew:
                continue
            if r.status_code != 200:
                return None
            return str(r.json()["token"]["project"]["id"])
        return None

    def view(self, srv: FakeServer) -> dict[str, Any]:
        addresses: dict[str, list[dict[str, Any]]] = {}
        for i, n in enumerate(srv.networks):
            net = next((x for x in NETWORKS if x["id"] == n.get("uuid")), None)
            if net:
                addresses.setdefault(net["name"], []).append(
                    {"addr": f"10.0.{NETWORKS.index(net)}.{10 + i}", "version": 4,
                     "OS-EXT-IPS-MAC:mac_addr": f"fa:16:3e:00:00:{i:02x}"})
        return {"id": srv.id, "name": srv.name, "status": srv.status, "tenant_id": srv.project_id,
                "flavor": {"original_name": srv.flavor["name"], "vcpus": srv.flavor["vcpus"],
                           "ram": srv.flavor["ram"], "disk": srv.flavor["disk"]},
                "image": {"id": srv.image_id} if srv.image_id else "",
                "addresses": addresses, "metadata": srv.metadata,
                "OS-EXT-STS:power_state": 1 if srv.status == "ACTIVE" else 0,
                "links": [{"rel": "self", "href": f"{self.url}/compute/v2.1/servers/{srv.id}"}]}


class _Handler(BaseHTTPRequestHandler):
    nova: FakeNova
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass

    def _send(self, status: int, body: Any = None) -> None:
        data = b"" if body is None else json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _error(self, status: int, message: str) -> None:
        key = {400: "badRequest", 401: "unauthorized", 404: "itemNotFound", 409: "conflictingRequest"}[status]
        self._send(status, {key: {"code": status, "message": message}})

    def _body(self) -> Any:
        length = int(self.headers.get("Content-Length") or 0)
        return json.loads(self.rfile.read(length) or b"null") if length else None

    def _route(self, method: str) -> None:
        body = self._body() if method in ("POST", "PUT") else None
        project = self.nova.project_of(self.headers.get("X-Auth-Token"))
        if project is None:
            self._send(401, {"error": {"code": 401, "title": "Unauthorized",
                                       "message": "The request you have made requires authentication."}})
            return
        path = self.path.split("?", 1)[0].rstrip("/")
        for pattern, handler in ROUTES:
            m = re.fullmatch(pattern, f"{method} {path}")
            if m:
                handler(self, project, body, *m.groups())
                return
        self._error(404, f"{method} {path} is not implemented by the fake compute API")

    def do_GET(self) -> None:
        self._route("GET")

    def do_POST(self) -> None:
        self._route("POST")

    def do_DELETE(self) -> None:
        self._route("DELETE")

    # -- compute --------------------------------------------------------------------------------------
    def flavors(self, _project: str, _body: Any) -> None:
        self._send(200, {"flavors": FLAVORS})

    def list_servers(self, project: str, _body: Any) -> None:
        with self.nova.lock:
            found = [self.nova.view(s) for s in self.nova.servers.values() if s.project_id == project]
        self._send(200, {"servers": found})

    def _server(self, project: str, server_id: str) -> FakeServer | None:
        srv = self.nova.servers.get(server_id)
        if srv is None or srv.project_id != project:
            self._error(404, f"Instance {server_id} could not be found.")
            return None
        return srv

    def get_server(self, project: str, _body: Any, server_id: str) -> None:
        srv = self._server(project, server_id)
        if srv is None:
            return
        if srv.status == "BUILD":
            srv.status = "ACTIVE"
        self._send(200, {"server": self.nova.view(srv)})

    def delete_server(self, project: str, _body: Any, server_id: str) -> None:
        if self._server(project, server_id) is None:
            return
        with self.nova.lock:
            self.nova.servers.pop(server_id, None)
        self._send(204)

    def create_server(self, project: str, body: Any) -> None:
        req = (body or {}).get("server") or {}
        flavor = next((f for f in FLAVORS if f["id"] == str(req.get("flavorRef"))), None)
        if flavor is None:
            self._error(400, f"Flavor {req.get('flavorRef')} could not be found.")
            return
        for net in req.get("networks") or []:
            if not any(n["id"] == net.get("uuid") for n in NETWORKS):
                self._error(400, f"Network {net.get('uuid')} could not be found.")
                return
        for group in req.get("security_groups") or []:
            if not any(g["name"] == group.get("name") for g in SECURITY_GROUPS):
                self._error(400, f"Security group {group.get('name')} not found.")
                return
        image_id = req.get("imageRef") or next(
            (b.get("uuid") for b in req.get("block_device_mapping_v2") or [] if b.get("source_type") == "image"), None)
        if not image_id:
            self._error(400, "Block Device Mapping is Invalid: no image to boot from.")
            return
        r = httpx.get(f"{self.nova.glance_url}/v2/images/{image_id}",
                      headers={"X-Auth-Token": self.headers["X-Auth-Token"]}, timeout=30)
        if r.status_code != 200 or r.json().get("status") != "active":
            self._error(400, f"Image {image_id} could not be found or is not active.")
            return
        image = r.json()
        srv = FakeServer(id=str(uuid.uuid4()), name=req.get("name", ""), project_id=project, flavor=flavor,
                         networks=req.get("networks") or [], image_id=image_id,
                         image_info={k: image.get(k) for k in ("size", "checksum", "disk_format")},
                         metadata=req.get("metadata") or {})
        with self.nova.lock:
            self.nova.servers[srv.id] = srv
            self.nova.created.append({"project_id": project, "id": srv.id, "body": body})
        self._send(202, {"server": {"id": srv.id, "links": [], "OS-DCF:diskConfig": "MANUAL",
                                    "security_groups": req.get("security_groups") or [{"name": "default"}]}})

    def action(self, project: str, body: Any, server_id: str) -> None:
        srv = self._server(project, server_id)
        if srv is None:
            return
        if "os-getConsoleOutput" in (body or {}):
            info = srv.image_info
            lines = [
                "[    0.000000] Linux version (fake-nova console; nothing was booted)",
                f"fake-nova: boot disk from Glance image {srv.image_id} size={info.get('size')} "
                f"checksum={info.get('checksum')} format={info.get('disk_format')}",
                "[  OK  ] Reached target Multi-User System.",
                f"{srv.name} login: ",
            ]
            self._send(200, {"output": "\n".join(lines) + "\n"})
            return
        if "os-stop" in (body or {}):
            srv.status = "SHUTOFF"
            self._send(202)
            return
        if "createImage" in (body or {}):
            self._create_image(srv, body["createImage"])
            return
        self._error(400, f"Action {list(body or {})} is not implemented by the fake compute API")

    def _create_image(self, srv: FakeServer, req: dict[str, Any]) -> None:
        token = self.headers["X-Auth-Token"]
        glance = httpx.Client(base_url=self.nova.glance_url, headers={"X-Auth-Token": token}, timeout=600)
        with glance:
            created = glance.post("/v2/images", json={"name": req.get("name", srv.name), "disk_format": "raw",
                                                      "container_format": "bare",
                                                      **(req.get("metadata") or {})})
            created.raise_for_status()
            image_id = created.json()["id"]
            if srv.disk_file is not None:
                data_path = srv.disk_file
            else:
                data_path = self.nova.root / f"{image_id}.src"
                with glance.stream("GET", f"/v2/images/{srv.image_id}/file") as r, open(data_path, "wb") as f:
                    for chunk in r.iter_bytes(1 << 20):
                        f.write(chunk)

            def chunks() -> Any:
                with open(data_path, "rb") as f:
                    while block := f.read(1 << 20):
                        yield block

            glance.put(f"/v2/images/{image_id}/file", content=chunks(),
                       headers={"Content-Type": "application/octet-stream"}).raise_for_status()
        self._send(200, {"image_id": image_id})

    # -- network --------------------------------------------------------------------------------------
    def networks(self, _project: str, _body: Any) -> None:
        self._send(200, {"networks": [{**n, "status": "ACTIVE", "shared": True, "subnets": []} for n in NETWORKS]})

    def security_groups(self, _project: str, _body: Any) -> None:
        self._send(200, {"security_groups": SECURITY_GROUPS})


ROUTES: list[tuple[str, Any]] = [
    (r"GET /compute/v2\.1/flavors/detail", _Handler.flavors),
    (r"GET /compute/v2\.1/servers/detail", _Handler.list_servers),
    (r"POST /compute/v2\.1/servers", _Handler.create_server),
    (r"GET /compute/v2\.1/servers/([^/]+)", _Handler.get_server),
    (r"DELETE /compute/v2\.1/servers/([^/]+)", _Handler.delete_server),
    (r"POST /compute/v2\.1/servers/([^/]+)/action", _Handler.action),
    (r"GET /network/v2\.0/networks", _Handler.networks),
    (r"GET /network/v2\.0/security-groups", _Handler.security_groups),
]
