"""A small fake of Azure Resource Manager (compute + network) and of its token authority.

No emulator of ARM exists, so this in-repo server is what the real ``azure-identity``,
``azure-mgmt-compute`` and ``azure-mgmt-network`` SDKs talk to in the tests (through their
``base_url`` / ``authority``). It serves HTTPS with a throw-away certificate, because MSAL
refuses a non-HTTPS authority and azure-core refuses a bearer token over plain HTTP: the
clients trust it through ``connection_info["ca_bundle"]``, as they would a private CA on Azure Stack.

What it models, as ARM does it:

* **Token authority** (the Entra ID v2 endpoints): OpenID discovery and the client-credentials
  grant. A wrong secret gets ``invalid_client`` / AADSTS7000215, an unknown client
  ``unauthorized_client`` / AADSTS700016. Tokens are opaque and checked on every ARM call
  (401 ``InvalidAuthenticationToken`` otherwise).
* **Subscriptions, roles, resource groups**: an unknown subscription is 404
  ``SubscriptionNotFound``; a principal with no role on it gets 403 ``AuthorizationFailed``; a
  missing resource group 404 ``ResourceGroupNotFound``.
* **Long-running operations**: PUT/DELETE/POST actions answer 201/202 with an
  ``Azure-AsyncOperation`` header (and ``Location`` for POST actions); the operation reports
  ``InProgress`` once, then ``Succeeded`` (or ``Failed`` with the error), so the SDK's poller
  really polls. ``Retry-After`` is 0.05 s, which is what makes the tests fast.
* **Managed disks**: ``createOption: Upload`` (``uploadSizeBytes`` must be a whole MiB plus the
  512-byte VHD footer), ``Empty``, and ``Copy`` (from a disk or snapshot); ``diskState``
  ReadyToUpload → ActiveUpload → Unattached → Attached, and ActiveSAS for read grants.
  ``beginGetAccess`` / ``endGetAccess`` grant and revoke a SAS. **The bytes live in Azurite**: each
  disk or snapshot is a page blob in its own container, and a SAS is tied to a stored access
  policy on that container, so revoking really invalidates the URL. Deleting a disk that is
  attached or has a SAS granted is refused (409), as in Azure.
* **Snapshots** (``Copy`` of a disk, ``incremental`` recorded; the blob is copied in Azurite).
* **VMs**: size checked against the location's sizes (``InvalidParameter`` targeting
  ``vmSize``), OS/data disks must exist and be Unattached, NICs must exist; a per-location
  vCPU quota (``OperationNotAllowed`` naming the quota, as ARM's quota error does). Deleting
  a VM detaches its disks.
* **Network**: virtual networks, subnets, NSGs (seeded by the tests) and NICs; a NIC that names a
  missing subnet or NSG gets 400 ``InvalidResourceReference``; a NIC in use can't be deleted.
* ``tags`` are stored and returned on every resource; lists filter nothing (clients do). A PUT
  on a resource that exists answers 200 and updates only its tags (enough for the tag updates
  Sterna makes; ARM would also apply the other mutable properties).
* A write SAS is granted only to a ReadyToUpload disk, so there is never a second write SAS on a
  disk whose upload is under way: the fake's reading of Azure's documented state machine, not a
  behaviour checked against Azure.
* ``long_running = False`` answers every operation within its request (200 and the final body, as
  ARM does for operations that complete at once), for in-process tests that are not about polling.

What it does not model: RBAC beyond "has a role on the subscription or not", API-version
checks, ETags and ``If-Match``, the 20 MiB minimum upload size, regions other than those the test
names, boot (a VM is "running" at once; boot diagnostics return no console), incremental
snapshot page-range diffs (Azurite lacks them), throttling, and paging (lists are one page).
"""

from __future__ import annotations

import copy
import datetime
import ipaddress
import json
import re
import secrets
import ssl
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from azure.storage.blob import AccessPolicy, BlobServiceClient, ContainerSasPermissions, generate_blob_sas

from tests.peers.azure.azurite import ACCOUNT, ACCOUNT_KEY, Azurite

MIB = 1024 * 1024
VM_SIZES = {
    "Standard_B1s": (1, 1024),
    "Standard_B2s": (2, 4096),
    "Standard_D2s_v3": (2, 8192),
    "Standard_D4s_v3": (4, 16384),
    "Standard_D8s_v3": (8, 32768),
}


@dataclass
class Principal:
    tenant: str
    client_id: str
    secret: str
    subscriptions: set[str]  # where it has a role (Contributor, in effect)


@dataclass
class State:
    principals: dict[str, Principal] = field(default_factory=dict)
    subscriptions: set[str] = field(default_factory=set)
    tokens: dict[str, str] = field(default_factory=dict)  # token -> client id
    groups: dict[str, dict[str, Any]] = field(default_factory=dict)  # lower rg id -> body
    resources: dict[str, dict[str, Any]] = field(default_factory=dict)  # lower resource id -> body
    operations: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: per-location vCPU quota
    core_quota: int = 20
    #: SAS grants ever made: disk id -> policy id (kept after revoke, for the tests)
    grants: dict[str, str] = field(default_factory=dict)
    lock: threading.RLock = field(default_factory=threading.RLock)


class ArmError(Exception):
    def __init__(self, status: int, code: str, message: str, target: str | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.target = status, code, message, target

    def body(self) -> dict[str, Any]:
        err: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.target:
            err["target"] = self.target
        return {"error": err}


_RES = re.compile(
    r"^/subscriptions/(?P<sub>[^/]+)/resourcegroups/(?P<rg>[^/]+)/providers/(?P<ns>microsoft\.[a-z]+)/"
    r"(?P<path>.+)$", re.I)


class FakeArm:
    """The server; ``url`` is both the ARM endpoint and the authority host."""

    def __init__(self, azurite: Azurite, workdir: Path) -> None:
        self.azurite = azurite
        self.state = State()
        #: polls an operation answers InProgress before it ends (0: the first poll sees the end)
        self.polls_in_progress = 0
        #: False: operations finish within the request (200 with the final body, as ARM answers an
        #: operation that completed at once); for in-process tests that are not about polling
        self.long_running = True
        self.blobs = BlobServiceClient.from_connection_string(azurite.connection_string)
        self.cert, self.key = _certificate(workdir)
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(self.cert, self.key)
        self.server.socket = ctx.wrap_socket(self.server.socket, server_side=True)
        self.url = f"https://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True, name="fake-arm")

    # -- set-up helpers for tests -------------------------------------------------------------

    def add_principal(self, tenant: str, client_id: str, secret: str, subscription: str,
                      role: bool = True) -> None:
        with self.state.lock:
            self.state.subscriptions.add(subscription)
            self.state.principals[client_id] = Principal(tenant, client_id, secret,
                                                         {subscription} if role else set())

    def add_group(self, sub: str, rg: str, location: str) -> str:
        rid = f"/subscriptions/{sub}/resourceGroups/{rg}"
        with self.state.lock:
            self.state.groups[rid.lower()] = {"id": rid, "name": rg, "location": location,
                                              "properties": {"provisioningState": "Succeeded"}}
        return rid

    def put(self, rid: str, body: dict[str, Any]) -> dict[str, Any]:
        """Store a resource directly (test set-up: VNets, subnets, NSGs)."""
        body = {"id": rid, "name": rid.rsplit("/", 1)[1], **body}
        body.setdefault("properties", {})["provisioningState"] = "Succeeded"
        with self.state.lock:
            self.state.resources[rid.lower()] = body
        return body

    def get(self, rid: str) -> dict[str, Any] | None:
        with self.state.lock:
            found = self.state.resources.get(rid.lower())
            return copy.deepcopy(found) if found else None

    def of_type(self, rtype: str) -> list[dict[str, Any]]:
        with self.state.lock:
            return [copy.deepcopy(r) for r in self.state.resources.values() if r.get("type") == rtype]

    def sas_granted(self) -> list[str]:
        """Disks and snapshots whose SAS is still granted."""
        with self.state.lock:
            return [r["id"] for r in self.state.resources.values()
                    if r.get("properties", {}).get("diskState") in ("ActiveUpload", "ActiveSAS")]

    def reset(self) -> None:
        with self.state.lock:
            for res in list(self.state.resources.values()):
                if "_container" in res:
                    self.blobs.delete_container(res["_container"])
            self.state = State()

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    # -- blobs ----------------------------------------------------------------------------------

    @staticmethod
    def container_for(rid: str) -> str:
        return "md-" + uuid.uuid5(uuid.NAMESPACE_URL, rid.lower()).hex

    def blob(self, res: dict[str, Any]) -> Any:
        return self.blobs.get_blob_client(res["_container"], "abcd")

    def grant(self, res: dict[str, Any], write: bool, seconds: int) -> str:
        policy = "grant-" + secrets.token_hex(4)
        expiry = datetime.datetime.now(datetime.UTC) + datetime.timedelta(seconds=seconds)
        perms = ContainerSasPermissions(read=True, write=write)
        container = self.blobs.get_container_client(res["_container"])
        container.set_container_access_policy({policy: AccessPolicy(permission=perms, expiry=expiry)})
        sas = generate_blob_sas(ACCOUNT, res["_container"], "abcd", account_key=ACCOUNT_KEY, policy_id=policy)
        self.state.grants[res["id"].lower()] = policy
        return f"{self.azurite.url}/{res['_container']}/abcd?{sas}"

    def revoke(self, res: dict[str, Any]) -> None:
        self.blobs.get_container_client(res["_container"]).set_container_access_policy({})


def _certificate(workdir: Path) -> tuple[str, str]:
    """A self-signed certificate for 127.0.0.1 (the clients trust this file as their CA bundle)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "fake-arm")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
        .sign(key, hashes.SHA256())
    )
    workdir.mkdir(parents=True, exist_ok=True)
    cert_path, key_path = workdir / "fake-arm.crt", workdir / "fake-arm.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return str(cert_path), str(key_path)


def _handler(arm: FakeArm) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: Any) -> None:
            pass

        def _reply(self, status: int, body: Any = None, headers: dict[str, str] | None = None) -> None:
            data = json.dumps(body).encode() if body is not None else b""
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.send_header("x-ms-request-id", str(uuid.uuid4()))
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(data)

        def _body(self) -> bytes:
            n = int(self.headers.get("Content-Length") or 0)
            return self.rfile.read(n) if n else b""

        def _dispatch(self, method: str) -> None:
            url = urlsplit(self.path)
            raw = self._body()
            try:
                if "/oauth2/v2.0/token" in url.path or url.path.endswith("/openid-configuration"):
                    status, body, headers = _authority(arm, method, url.path, raw)
                else:
                    status, body, headers = _arm(arm, method, url.path, parse_qs(url.query), raw,
                                                 self.headers.get("Authorization", ""))
            except ArmError as exc:
                status, body, headers = exc.status, exc.body(), {}
            except Exception as exc:  # the fake's own bug: say so, as ARM's 500 would
                status, body, headers = 500, {"error": {"code": "InternalServerError",
                                                        "message": f"fake ARM: {type(exc).__name__}: {exc}"}}, {}
            self._reply(status, body, headers)

        def do_GET(self) -> None:
            self._dispatch("GET")

        def do_PUT(self) -> None:
            self._dispatch("PUT")

        def do_POST(self) -> None:
            self._dispatch("POST")

        def do_DELETE(self) -> None:
            self._dispatch("DELETE")

        def do_PATCH(self) -> None:
            self._dispatch("PATCH")

    return Handler


Reply = tuple[int, Any, dict[str, str]]


def _public(res: dict[str, Any]) -> dict[str, Any]:
    """What ARM shows of a stored resource (the fake's own bookkeeping keys start with '_')."""
    return {k: copy.deepcopy(v) for k, v in res.items() if not k.startswith("_")}


def _authority(arm: FakeArm, method: str, path: str, raw: bytes) -> Reply:
    tenant = path.strip("/").split("/")[0]
    base = f"{arm.url}/{tenant}"
    if method == "GET":
        return 200, {
            "token_endpoint": f"{base}/oauth2/v2.0/token",
            "authorization_endpoint": f"{base}/oauth2/v2.0/authorize",
            "device_authorization_endpoint": f"{base}/oauth2/v2.0/devicecode",
            "issuer": f"{base}/v2.0",
            "tenant_region_scope": "EU",
        }, {}
    form = {k: v[0] for k, v in parse_qs(raw.decode()).items()}
    principal = arm.state.principals.get(form.get("client_id", ""))

    def refuse(code: str, aad: str, text: str) -> Reply:
        return (400 if code != "invalid_client" else 401), {
            "error": code, "error_description": f"{aad}: {text}", "error_codes": [int(aad[6:])],
            "timestamp": datetime.datetime.now(datetime.UTC).isoformat(), "trace_id": str(uuid.uuid4()),
        }, {}

    if principal is None or principal.tenant != tenant:
        return refuse("unauthorized_client", "AADSTS700016",
                      f"Application with identifier '{form.get('client_id')}' was not found in the directory "
                      f"'{tenant}'.")
    if form.get("grant_type") != "client_credentials" or form.get("client_secret") != principal.secret:
        return refuse("invalid_client", "AADSTS7000215", "Invalid client secret provided. Ensure the secret "
                      f"being sent in the request is the client secret value, not the client secret ID, for a "
                      f"secret added to app '{principal.client_id}'.")
    token = secrets.token_urlsafe(24)
    with arm.state.lock:
        arm.state.tokens[token] = principal.client_id
    return 200, {"token_type": "Bearer", "expires_in": 3599, "ext_expires_in": 3599, "access_token": token}, {}


def _arm(arm: FakeArm, method: str, path: str, query: dict[str, list[str]], raw: bytes, auth: str) -> Reply:
    st = arm.state
    token = auth.removeprefix("Bearer ").strip()
    with st.lock:
        client_id = st.tokens.get(token)
    if not client_id:
        raise ArmError(401, "InvalidAuthenticationToken", "The access token is invalid.")
    parts = path.strip("/").split("/")
    if len(parts) < 2 or parts[0].lower() != "subscriptions":
        raise ArmError(404, "InvalidResourceType", f"no route for {path}")
    sub = parts[1]
    if sub not in st.subscriptions:
        raise ArmError(404, "SubscriptionNotFound", f"The subscription '{sub}' could not be found.")
    if sub not in st.principals[client_id].subscriptions:
        raise ArmError(403, "AuthorizationFailed",
                       f"The client '{client_id}' with object id '{client_id}' does not have authorization to "
                       f"perform action '{method}' over scope '/subscriptions/{sub}' or the scope is invalid.")
    body = json.loads(raw) if raw else {}
    with st.lock:
        if "/operations-results/" in path.lower() and method == "GET":
            result = st.operations.get(parts[-1])
            if result is None:
                raise ArmError(404, "NotFound", f"operation {parts[-1]} not found")
            return 200, result["output"], {}
        if "/operations/" in path.lower() and method == "GET":
            return _operation(arm, parts[-1])
        if path.lower().endswith("/vmsizes"):
            return 200, {"value": [{"name": n, "numberOfCores": c, "memoryInMB": m, "maxDataDiskCount": 2 * c,
                                    "osDiskSizeInMB": 1047552, "resourceDiskSizeInMB": 4096 * c}
                                   for n, (c, m) in VM_SIZES.items()]}, {}
        m = _RES.match(path)
        if not m:
            if len(parts) == 5 and parts[2].lower() == "providers" and method == "GET":
                rtype = f"{parts[3]}/{parts[4]}".lower()
                return 200, {"value": [_public(r) for k, r in st.resources.items()
                                       if k.startswith(f"/subscriptions/{sub}/".lower())
                                       and r.get("type", "").lower() == rtype]}, {}
            if len(parts) == 4 and parts[2].lower() == "resourcegroups":
                group = st.groups.get(path.rstrip("/").lower())
                if group is None:
                    raise ArmError(404, "ResourceGroupNotFound", f"Resource group '{parts[3]}' could not be found.")
                return 200, group, {}
            raise ArmError(404, "InvalidResourceType", f"no route for {path}")
        rg_id = f"/subscriptions/{sub}/resourceGroups/{m['rg']}"
        if rg_id.lower() not in st.groups:
            raise ArmError(404, "ResourceGroupNotFound", f"Resource group '{m['rg']}' could not be found.")
        segs = m["path"].split("/")
        ns = {"microsoft.compute": "Microsoft.Compute", "microsoft.network": "Microsoft.Network"}.get(
            m["ns"].lower(), m["ns"])
        location = st.groups[rg_id.lower()]["location"]
        if len(segs) % 2 == 1 and method == "GET":  # a collection
            rtype = f"{ns}/" + "/".join(segs[0::2])
            prefix = f"{rg_id}/providers/{ns}/".lower()
            return 200, {"value": [_public(r) for k, r in st.resources.items()
                                   if k.startswith(prefix) and r.get("type", "").lower() == rtype.lower()]}, {}
        if len(segs) % 2 == 1 and method == "POST":  # an action on a resource
            rid = f"{rg_id}/providers/{ns}/" + "/".join(segs[:-1])
            return _action(arm, rid, segs[-1], body, location)
        rid = f"{rg_id}/providers/{ns}/{m['path']}"
        rtype = f"{ns}/" + "/".join(segs[0::2])
        if method == "GET":
            found = st.resources.get(rid.lower())
            if found is None and rid.lower().endswith("/instanceview"):
                vm = st.resources.get(rid.lower().rsplit("/", 1)[0])
                if vm is not None:
                    return 200, vm["properties"].get("instanceView", {}), {}
            if found is None:
                raise ArmError(404, "ResourceNotFound" if ns == "Microsoft.Compute" else "NotFound",
                               f"The Resource '{ns}/{'/'.join(segs)}' under resource group '{m['rg']}' was not found.")
            return 200, _public(found), {}
        if method == "PUT":
            return _create(arm, rid, rtype, body, location)
        if method == "DELETE":
            return _delete(arm, rid)
    raise ArmError(405, "MethodNotAllowed", f"{method} {path}")


def _operation(arm: FakeArm, op_id: str) -> Reply:
    op = arm.state.operations.get(op_id)
    if op is None:
        raise ArmError(404, "NotFound", f"operation {op_id} not found")
    op["polls"] += 1
    if op["polls"] < arm.polls_in_progress + 1:
        return 200, {"name": op_id, "status": "InProgress"}, {"Retry-After": "1"}
    if op.get("error"):
        return 200, {"name": op_id, "status": "Failed", "error": op["error"]}, {}
    return 200, {"name": op_id, "status": "Succeeded", **({"properties": {"output": op["output"]}}
                                                          if op.get("output") else {})}, {}


def _lro(arm: FakeArm, location: str, ns: str, status: int, body: Any, *, output: Any = None,
         final_location: bool = False) -> Reply:
    if not arm.long_running:
        if isinstance(body, dict) and "properties" in body:
            body["properties"]["provisioningState"] = "Succeeded"
        return (200, output if output is not None else body, {}) if (output or body) else (200, None, {})
    op_id = str(uuid.uuid4())
    arm.state.operations[op_id] = {"polls": 0, "output": output}
    op_url = f"{arm.url}/subscriptions/{next(iter(arm.state.subscriptions))}/providers/{ns}/locations/{location}" \
             f"/operations/{op_id}?api-version=2024-03-02"
    headers = {"Azure-AsyncOperation": op_url, "Retry-After": "1"}
    if final_location:
        headers["Location"] = op_url.replace("/operations/", "/operations-results/")
    return status, body, headers


def _ref(arm: FakeArm, rid: str | None, what: str, referrer: str) -> dict[str, Any]:
    found = arm.state.resources.get((rid or "").lower())
    if found is None:
        raise ArmError(400, "InvalidResourceReference",
                       f"Resource {rid} referenced by resource {referrer} was not found. Please make sure that "
                       f"the referenced resource exists, and that both resources are in the same region.",
                       target=what)
    return found


def _create(arm: FakeArm, rid: str, rtype: str, body: dict[str, Any], location: str) -> Reply:
    st = arm.state
    props = copy.deepcopy(body.get("properties") or {})
    res = {"id": rid, "name": rid.rsplit("/", 1)[1], "type": rtype, "location": body.get("location", location),
           "tags": body.get("tags") or {}, "properties": props}
    if "sku" in body:
        res["sku"] = body["sku"]
    ns = rtype.split("/", maxsplit=1)[0]
    kind = rtype.lower()
    if rid.lower() in st.resources and kind in ("microsoft.compute/disks", "microsoft.compute/snapshots"):
        # Real ARM updates in place; a disk's creationData can't change, so keep what exists.
        existing = st.resources[rid.lower()]
        existing["tags"] = res["tags"]
        return 200, _public(existing), {}
    if kind in ("microsoft.compute/disks", "microsoft.compute/snapshots"):
        _create_disk(arm, res, props)
    elif kind == "microsoft.compute/virtualmachines":
        _create_vm(arm, res, props)
    elif kind == "microsoft.network/networkinterfaces":
        for i, conf in enumerate(props.get("ipConfigurations") or []):
            cp = conf.setdefault("properties", {})
            _ref(arm, (cp.get("subnet") or {}).get("id"), f"ipConfigurations[{i}].subnet", rid)
            cp.setdefault("privateIPAddress", f"10.0.0.{4 + len(st.resources) % 200}")
            conf.setdefault("id", f"{rid}/ipConfigurations/{conf.get('name', 'ipconfig1')}")
        if props.get("networkSecurityGroup"):
            _ref(arm, props["networkSecurityGroup"].get("id"), "networkSecurityGroup", rid)
        props["macAddress"] = "00-0D-3A-" + "-".join(f"{b:02X}" for b in secrets.token_bytes(3))
    props["provisioningState"] = "Succeeded"
    st.resources[rid.lower()] = res
    shown = _public(res)
    shown["properties"]["provisioningState"] = "Creating" if ns == "Microsoft.Compute" else "Updating"
    # As ARM: disks and snapshots answer 202 Accepted, VMs and NICs 201 Created.
    status = 202 if kind in ("microsoft.compute/disks", "microsoft.compute/snapshots") else 201
    return _lro(arm, res["location"], ns, status, shown)


def _create_disk(arm: FakeArm, res: dict[str, Any], props: dict[str, Any]) -> None:
    data = props.get("creationData") or {}
    option = data.get("createOption")
    res["_container"] = arm.container_for(res["id"])
    if option == "Upload":
        size = int(data.get("uploadSizeBytes") or 0)
        if size <= 512 or (size - 512) % MIB:
            raise ArmError(400, "InvalidParameter", f"The specified uploadSizeBytes {size} is not valid: it must be "
                           "a whole number of MiB plus 512 bytes for the VHD footer.", target="uploadSizeBytes")
        props["diskSizeBytes"] = size - 512
        props["diskState"] = "ReadyToUpload"
    elif option == "Empty":
        size = int(props.get("diskSizeGB") or 0) * 1024**3
        if size <= 0:
            raise ArmError(400, "InvalidParameter", "diskSizeGB is required for createOption Empty.")
        props["diskSizeBytes"] = size
        props["diskState"] = "Unattached"
    elif option == "Copy":
        src = _ref(arm, data.get("sourceResourceId"), "creationData.sourceResourceId", res["id"])
        props["diskSizeBytes"] = src["properties"]["diskSizeBytes"]
        props["diskState"] = "Unattached"
        arm.blobs.create_container(res["_container"])
        target = arm.blobs.get_blob_client(res["_container"], "abcd")
        # Azurite copies within the account; the source is read through a short account-key SAS.
        expiry = datetime.datetime.now(datetime.UTC) + datetime.timedelta(hours=1)
        sas = generate_blob_sas(ACCOUNT, src["_container"], "abcd", account_key=ACCOUNT_KEY, permission="r",
                                expiry=expiry)
        target.start_copy_from_url(f"{arm.azurite.url}/{src['_container']}/abcd?{sas}", requires_sync=True)
        props["timeCreated"] = datetime.datetime.now(datetime.UTC).isoformat()
        return
    else:
        raise ArmError(400, "InvalidParameter", f"createOption '{option}' is not supported by this fake.",
                       target="createOption")
    props["diskSizeGB"] = -(-props["diskSizeBytes"] // 1024**3)
    props["timeCreated"] = datetime.datetime.now(datetime.UTC).isoformat()
    arm.blobs.create_container(res["_container"])
    arm.blobs.get_blob_client(res["_container"], "abcd").create_page_blob(
        props["diskSizeBytes"] + (512 if option == "Upload" else 0))


def _create_vm(arm: FakeArm, res: dict[str, Any], props: dict[str, Any]) -> None:
    st = arm.state
    size = (props.get("hardwareProfile") or {}).get("vmSize")
    if size not in VM_SIZES:
        raise ArmError(400, "InvalidParameter", f"The value {size} provided for the VM size is not valid. The valid "
                       f"sizes in the current region are: {', '.join(VM_SIZES)}.", target="vmSize")
    used = sum(VM_SIZES[r["properties"]["hardwareProfile"]["vmSize"]][0] for r in st.resources.values()
               if r.get("type") == "Microsoft.Compute/virtualMachines" and r["location"] == res["location"])
    if used + VM_SIZES[size][0] > st.core_quota:
        raise ArmError(409, "OperationNotAllowed",
                       f"Operation could not be completed as it results in exceeding approved Total Regional Cores "
                       f"quota. Location: {res['location']}, Current Limit: {st.core_quota}, Current Usage: {used}, "
                       f"Additional Required: {VM_SIZES[size][0]}.")
    storage = props.get("storageProfile") or {}
    disks = [storage.get("osDisk") or {}, *list(storage.get("dataDisks") or [])]
    found = []
    for i, d in enumerate(disks):
        disk = _ref(arm, (d.get("managedDisk") or {}).get("id"), "osDisk" if i == 0 else f"dataDisks[{i - 1}]",
                    res["id"])
        if disk["properties"].get("diskState") not in ("Unattached",):
            raise ArmError(409, "OperationNotAllowed", f"Disk {disk['name']} is in state "
                           f"{disk['properties'].get('diskState')}: only an Unattached disk can be attached.")
        found.append(disk)
    for i, nic in enumerate((props.get("networkProfile") or {}).get("networkInterfaces") or []):
        _ref(arm, nic.get("id"), f"networkInterfaces[{i}]", res["id"])
    for disk in found:
        disk["properties"]["diskState"] = "Attached"
        disk["managedBy"] = res["id"]
    for nic in (props.get("networkProfile") or {}).get("networkInterfaces") or []:
        st.resources[nic["id"].lower()]["properties"]["virtualMachine"] = {"id": res["id"]}
    props["vmId"] = str(uuid.uuid4())
    props["instanceView"] = {"statuses": [{"code": "PowerState/running"}]}


def _delete(arm: FakeArm, rid: str) -> Reply:
    st = arm.state
    res = st.resources.get(rid.lower())
    if res is None:
        return 204, None, {}
    kind = res["type"].lower()
    if kind in ("microsoft.compute/disks", "microsoft.compute/snapshots"):
        state = res["properties"].get("diskState")
        if res.get("managedBy"):
            raise ArmError(409, "OperationNotAllowed", f"Disk {res['name']} is attached to VM {res['managedBy']}.")
        if state in ("ActiveUpload", "ActiveSAS"):
            raise ArmError(409, "OperationNotAllowed", f"Disk {res['name']} has an active SAS (state {state}); "
                           "revoke access first.")
        arm.blobs.delete_container(res["_container"])
    elif kind == "microsoft.network/networkinterfaces":
        vm = (res["properties"].get("virtualMachine") or {}).get("id")
        if vm and vm.lower() in st.resources:
            raise ArmError(400, "NicInUse", f"Network Interface {rid} is used by existing resource {vm}.")
    elif kind == "microsoft.compute/virtualmachines":
        storage = res["properties"].get("storageProfile") or {}
        for d in [storage.get("osDisk") or {}, *list(storage.get("dataDisks") or [])]:
            disk = st.resources.get(((d.get("managedDisk") or {}).get("id") or "").lower())
            if disk:
                disk.pop("managedBy", None)
                disk["properties"]["diskState"] = "Unattached"
        for nic in (res["properties"].get("networkProfile") or {}).get("networkInterfaces") or []:
            found = st.resources.get(nic["id"].lower())
            if found:
                found["properties"].pop("virtualMachine", None)
    del st.resources[rid.lower()]
    return _lro(arm, res["location"], res["type"].split("/")[0], 202, None)


def _action(arm: FakeArm, rid: str, action: str, body: dict[str, Any], location: str) -> Reply:
    st = arm.state
    res = st.resources.get(rid.lower())
    if res is None:
        raise ArmError(404, "ResourceNotFound", f"The Resource '{rid}' was not found.")
    props = res["properties"]
    ns = res["type"].split("/")[0]
    if action.lower() == "begingetaccess":
        access = body.get("access")
        state = props.get("diskState")
        if access == "Write":
            if state != "ReadyToUpload":
                raise ArmError(409, "OperationNotAllowed", f"Disk {res['name']} is in state {state}: write access "
                               "is granted only to a disk created for upload.")
            props["diskState"] = "ActiveUpload"
        elif access == "Read":
            if state not in ("Unattached", "Attached", None, "ActiveSAS"):
                raise ArmError(409, "OperationNotAllowed", f"Disk {res['name']} is in state {state}.")
            res["_pre_sas"] = props.get("diskState")
            props["diskState"] = "ActiveSAS"
        else:
            raise ArmError(400, "InvalidParameter", f"access '{access}' is not valid.", target="access")
        url = arm.grant(res, access == "Write", int(body.get("durationInSeconds") or 3600))
        return _lro(arm, location, ns, 202, None, output={"accessSAS": url}, final_location=True)
    if action.lower() == "endgetaccess":
        state = props.get("diskState")
        arm.revoke(res)
        if state == "ActiveUpload":
            props["diskState"] = "Unattached"
        elif state == "ActiveSAS":
            props["diskState"] = res.pop("_pre_sas", None) or "Unattached"
        return _lro(arm, location, ns, 202, None)
    if action.lower() in ("poweroff", "deallocate", "start"):
        return _lro(arm, location, ns, 202, None)
    raise ArmError(400, "InvalidAction", f"action {action} is not supported by this fake")


@contextmanager
def running_fake_arm(azurite: Azurite, workdir: Path) -> Iterator[FakeArm]:
    arm = FakeArm(azurite, workdir)
    arm.start()
    try:
        yield arm
    finally:
        arm.stop()
