"""A small fake of the Compute Engine v1 REST API (and of Google's OAuth token endpoint).

Compute Engine has no emulator; this server is what the real ``google-cloud-compute`` client
talks to in the tests (``client_options.api_endpoint`` pointing here, plain HTTP).

How faithful it is:

* **Auth, as Google does it.** ``POST /token`` takes the service-account JWT-bearer grant,
  checks the RS256 signature against the public half of the key registered for that
  ``client_email`` and answers ``invalid_grant: Invalid JWT Signature.`` (HTTP 400) otherwise,
  as oauth2.googleapis.com does. Every Compute call needs a token it issued (else 401
  ``UNAUTHENTICATED``), and a project the account belongs to (else 403 with the missing
  permission named); an unknown project is a 404.
* **Resources and errors.** Zones, machine types, disk types, networks, subnetworks, images,
  instances, disks and operations, as JSON with GCE's field names. An unknown zone, machine
  type, image or subnetwork in a request is answered like GCE (404 ``notFound`` naming
  ``projects/P/zones/Z/machineTypes/T``; 400 for a malformed name; 409 ``alreadyExists``).
* **Long-running operations.** Inserts and deletes return an ``Operation`` that is PENDING,
  then RUNNING while a background thread does the work, then DONE, with ``error.errors`` on
  failure, exactly the fields the client's polling reads. ``.../operations/{op}/wait`` blocks
  until DONE or ``wait_timeout`` seconds (GCE: two minutes), like GCE.
* **Images are real.** ``images.insert`` with ``rawDisk.source`` (a
  ``https://storage.googleapis.com/B/O`` URL) reads the object from the GCS emulator and
  checks it as GCE's importer does: a gzip'd tar whose first member is ``disk.raw``, a regular
  or GNU sparse file whose size is a whole number of GiB; the image's ``diskSizeGb`` and
  ``archiveSizeBytes`` come from it, and ``image_bytes`` gives the tests the disk back.
* **Disks keep their bytes by reference.** A disk made from an image, a snapshot of a disk
  (``disks.createSnapshot``) and an image made from a snapshot (``sourceSnapshot``) all hold
  the bytes of the tarball the first image was imported from: no guest runs, so no disk is
  ever written, and a reference is what "the same bytes" costs nothing to model. Deleting
  that tarball from the emulator would break them (GCE copies; the fake does not).
* **Image export, as ``gcloud compute images export`` does it.** Compute v1 has no export
  call; gcloud submits a Cloud Build build whose one step is the
  ``gcr.io/compute-image-tools/gce_vm_image_export`` Daisy workflow. The fake serves Cloud
  Build's ``v1/projects/P/builds`` (create → a long-running operation naming the build;
  get; ``:cancel``) with statuses QUEUED → WORKING → SUCCESS/FAILURE/CANCELLED and
  ``failureInfo`` as Cloud Build reports them; a project's Cloud Build service account without
  ``roles/compute.admin`` and ``roles/iam.serviceAccountUser`` fails the export, as Daisy does.
  A build with that step reads the ``-source_image``'s bytes and writes ``-destination_uri`` into
  the GCS emulator as Daisy's ``gce_export`` does: a gzip'd tar (GNU format) whose one member
  ``disk.raw`` is a *regular* file of the whole disk (Go's archive/tar writes no sparse files), so
  holes are stored as compressed zeros. Any other build step fails the build. Not modelled: Cloud
  Build IAM beyond those two roles, build logs, the scratch VM Daisy boots.
* **Quotas.** a project's ``cpu_quota`` (per region, like ``CPUS``) makes an instance insert whose
  operation ends in ``QUOTA_EXCEEDED``, as GCE reports it.

Not modelled: IAM beyond project membership, instance stop/start beyond its status, pagination
(everything fits in one page), ``filter`` beyond ``labels.KEY = VALUE``, regions' own operations,
instances actually booting (no serial output), billing, and any real scheduling of capacity.
"""

from __future__ import annotations

import base64
import contextlib
import gzip
import io
import itertools
import json
import re
import tarfile
import threading
import time
import uuid
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, quote, unquote, urlparse

import requests
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

GIB = 1024**3
ZONES = {"us-central1-a": "us-central1", "us-central1-b": "us-central1", "europe-west1-b": "europe-west1"}
MACHINE_TYPES = {"e2-small": (2, 2048), "e2-medium": (2, 4096), "n2-standard-2": (2, 8192),
                 "n2-standard-4": (4, 16384), "n2-standard-8": (8, 32768)}
DISK_TYPES = ("pd-standard", "pd-balanced", "pd-ssd")
_NAME = re.compile(r"^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$")
_ids = itertools.count(1000001)


class ApiError(Exception):
    def __init__(self, code: int, message: str, reason: str) -> None:
        super().__init__(message)
        self.code, self.message, self.reason = code, message, reason


def _not_found(path: str) -> ApiError:
    return ApiError(404, f"The resource '{path}' was not found", "notFound")


@dataclass
class Operation:
    name: str
    kind: str  # "zone" or "global"
    where: str  # zone name, or "global"
    target: str
    op_type: str
    status: str = "PENDING"
    error: list[dict[str, str]] | None = None
    done: threading.Event = field(default_factory=threading.Event)

    def json(self, base: str, project: str) -> dict[str, Any]:
        scope = f"zones/{self.where}" if self.kind == "zone" else "global"
        out: dict[str, Any] = {
            "kind": "compute#operation", "id": str(next(_ids)), "name": self.name, "status": self.status,
            "operationType": self.op_type, "targetLink": f"{base}/projects/{project}/{self.target}",
            "selfLink": f"{base}/projects/{project}/{scope}/operations/{self.name}",
            "progress": 100 if self.status == "DONE" else 0,
        }
        if self.kind == "zone":
            out["zone"] = f"{base}/projects/{project}/zones/{self.where}"
        if self.error:
            out["error"] = {"errors": self.error}
            out["httpErrorStatusCode"] = 400
        return out


@dataclass
class Project:
    name: str
    images: dict[str, dict[str, Any]] = field(default_factory=dict)
    instances: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)  # zone -> name -> body
    disks: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)
    operations: dict[str, Operation] = field(default_factory=dict)
    subnetworks: dict[str, dict[str, str]] = field(default_factory=dict)  # region -> name -> network
    cpu_quota: dict[str, int] = field(default_factory=dict)  # region -> vCPUs (GCE's CPUS quota)
    snapshots: dict[str, dict[str, Any]] = field(default_factory=dict)
    builds: dict[str, dict[str, Any]] = field(default_factory=dict)  # Cloud Build builds by id
    #: "images/N", "snapshots/N", "disks/ZONE/N" -> the rawDisk tarball URL holding their bytes
    contents: dict[str, str] = field(default_factory=dict)
    #: roles of the project's Cloud Build service account (PROJECT_NUMBER@cloudbuild.gserviceaccount.com);
    #: the image export needs these two, as gcloud tells the user to grant
    cloudbuild_roles: set[str] = field(default_factory=lambda: {"roles/compute.admin",
                                                                 "roles/iam.serviceAccountUser"})


def new_service_account(project: str, name: str = "sterna-test") -> dict[str, Any]:
    """A service-account key file, as the console downloads it (a fresh RSA key)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption()).decode()
    return {
        "type": "service_account", "project_id": project, "private_key_id": uuid.uuid4().hex,
        "private_key": pem, "client_email": f"{name}@{project}.iam.gserviceaccount.com",
        "client_id": str(next(_ids)), "token_uri": "https://oauth2.googleapis.com/token",
    }


class FakeComputeEngine:
    """The server; ``url`` is both the Compute ``api_endpoint`` and (``url + "/token"``) the token URI."""

    def __init__(self, storage_url: str, wait_timeout: float = 2.0, op_delay: float = 0.05) -> None:
        self.storage_url = storage_url
        self.wait_timeout = wait_timeout
        self.op_delay = op_delay
        self.projects: dict[str, Project] = {}
        self.accounts: dict[str, tuple[Any, set[str]]] = {}  # client_email -> (public key, projects)
        self.tokens: dict[str, str] = {}
        self.lock = threading.RLock()
        self.requests: list[tuple[str, str, Any]] = []
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, name="fake-gce", daemon=True)

    # -- set-up ------------------------------------------------------------------------------

    def start(self) -> FakeComputeEngine:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def add_project(self, name: str) -> Project:
        with self.lock:
            proj = self.projects[name] = Project(name)
            proj.subnetworks = {"us-central1": {"default": "default", "app": "default"},
                                "europe-west1": {"default": "default"}}
            return proj

    def add_account(self, info: dict[str, Any], projects: set[str]) -> None:
        key = serialization.load_pem_private_key(info["private_key"].encode(), None)
        assert isinstance(key, rsa.RSAPrivateKey)
        self.accounts[info["client_email"]] = (key.public_key(), set(projects))

    def image_bytes(self, project: str, image: str) -> bytes:
        """The ``disk.raw`` an image was created from (read again from the GCS object)."""
        source = self.projects[project].contents[f"images/{image}"]
        with self._open_tar(source) as tf:
            member = tf.next()
            assert member is not None
            reader = tf.extractfile(member)
            assert reader is not None
            return reader.read()

    # -- token endpoint ----------------------------------------------------------------------

    def verify_jwt(self, jwt: str) -> str:
        """The ``iss`` of a JWT signed by a registered key; ``KeyError`` (unknown account) or ``ValueError``."""
        try:
            head, payload, sig = jwt.split(".")
            claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        except Exception as e:
            raise ValueError("not a JWT") from e
        key, _projects = self.accounts[claims["iss"]]
        try:
            key.verify(base64.urlsafe_b64decode(sig + "=" * (-len(sig) % 4)), f"{head}.{payload}".encode(),
                       padding.PKCS1v15(), hashes.SHA256())
        except Exception as e:
            raise ValueError("Invalid JWT Signature.") from e
        return str(claims["iss"])

    def _token(self, form: dict[str, str]) -> tuple[int, dict[str, Any]]:
        try:
            email = self.verify_jwt(form.get("assertion", ""))
        except KeyError:
            return 400, {"error": "invalid_grant", "error_description": "Invalid grant: account not found"}
        except ValueError:
            return 400, {"error": "invalid_grant", "error_description": "Invalid JWT Signature."}
        claims = {"iss": email}
        token = f"ya29.fake-{uuid.uuid4().hex}"
        self.tokens[token] = claims["iss"]
        return 200, {"access_token": token, "expires_in": 3599, "token_type": "Bearer"}

    # -- compute -----------------------------------------------------------------------------

    def _project(self, name: str, email: str, permission: str) -> Project:
        if name not in self.projects:
            raise _not_found(f"projects/{name}")
        if name not in self.accounts[email][1]:
            raise ApiError(403, f"Required '{permission}' permission for 'projects/{name}'", "forbidden")
        return self.projects[name]

    def _zone(self, zone: str) -> str:
        if zone not in ZONES:
            raise ApiError(400, f"Invalid value for field 'zone': '{zone}'. Unknown zone.", "invalid")
        return ZONES[zone]

    def _operation(self, proj: Project, kind: str, where: str, target: str, op_type: str,
                   work: Callable[[], None]) -> dict[str, Any]:
        op = Operation(f"operation-{uuid.uuid4().hex[:20]}", kind, where, target, op_type)
        proj.operations[op.name] = op

        def run() -> None:
            time.sleep(self.op_delay)
            op.status = "RUNNING"
            try:
                work()
            except ApiError as e:
                op.error = [{"code": e.reason, "message": e.message}]
            except Exception as e:  # the importer's own failure, reported as GCE does: on the operation
                op.error = [{"code": "INTERNAL_ERROR", "message": str(e)}]
            time.sleep(self.op_delay)
            op.status = "DONE"
            op.done.set()

        threading.Thread(target=run, daemon=True).start()
        return op.json(self.url + "/compute/v1", proj.name)

    def _object_url(self, source: str) -> str:
        m = re.fullmatch(r"https://storage\.googleapis\.com/([^/]+)/(.+)", source) or \
            re.fullmatch(r"gs://([^/]+)/(.+)", source)
        if not m:
            raise ApiError(400, f"Invalid value for field 'resource.rawDisk.source': '{source}'.", "invalid")
        return f"{self.storage_url}/storage/v1/b/{m.group(1)}/o/{quote(m.group(2), safe='')}"

    def _open_tar(self, source: str) -> tarfile.TarFile:
        r = requests.get(self._object_url(source), params={"alt": "media"}, timeout=60)
        if r.status_code == 404:
            raise ApiError(400, f"The resource '{source}' of type 'Google Cloud Storage object' was not found.",
                           "invalid")
        r.raise_for_status()
        return tarfile.open(fileobj=gzip.GzipFile(fileobj=io.BytesIO(r.content)), mode="r|")

    def _import_image(self, body: dict[str, Any]) -> None:
        source = body["rawDisk"]["source"]
        try:
            with self._open_tar(source) as tf:
                member = tf.next()
        except (tarfile.TarError, OSError, EOFError) as e:
            raise ApiError(400, f"Unable to read the image file {source}: not a gzip'd tar ({e})",
                           "IMAGE_FILE_INVALID") from e
        if member is None or member.name != "disk.raw" or not member.isreg():
            raise ApiError(400, "The image tarball must hold disk.raw as its first member", "IMAGE_FILE_INVALID")
        if member.size % GIB:
            raise ApiError(400, f"disk.raw is {member.size} bytes: the size must be a multiple of 1 GB",
                           "IMAGE_FILE_INVALID")
        head = requests.get(self._object_url(source), timeout=30).json()
        body.update(status="READY", diskSizeGb=str(member.size // GIB), archiveSizeBytes=head.get("size"))

    def _machine_type(self, zone: str, value: str) -> tuple[str, tuple[int, int]]:
        name = value.rsplit("/", 1)[-1]
        if name not in MACHINE_TYPES:
            raise _not_found(f"projects/{{project}}/zones/{zone}/machineTypes/{name}")
        return name, MACHINE_TYPES[name]

    def _insert_instance(self, proj: Project, zone: str, body: dict[str, Any]) -> dict[str, Any]:
        region = self._zone(zone)
        name = body.get("name", "")
        if not _NAME.match(name):
            raise ApiError(400, f"Invalid value for field 'resource.name': '{name}'.", "invalid")
        if name in proj.instances.get(zone, {}):
            raise ApiError(409, f"The resource 'projects/{proj.name}/zones/{zone}/instances/{name}' already exists",
                           "alreadyExists")
        try:
            mtype, (cpus, mem) = self._machine_type(zone, body.get("machineType", ""))
        except ApiError as e:
            raise ApiError(e.code, e.message.replace("{project}", proj.name), e.reason) from None
        nics = body.get("networkInterfaces") or []
        for nic in nics:
            sub = (nic.get("subnetwork") or "").rsplit("/", 1)[-1]
            if sub and sub not in proj.subnetworks.get(region, {}):
                raise _not_found(f"projects/{proj.name}/regions/{region}/subnetworks/{sub}")
        disks = body.get("disks") or []
        for disk in disks:
            image = ((disk.get("initializeParams") or {}).get("sourceImage") or "").rsplit("/", 1)[-1]
            if image and image not in proj.images:
                raise _not_found(f"projects/{proj.name}/global/images/{image}")

        def work() -> None:
            used = sum(MACHINE_TYPES[i["machineType"].rsplit("/", 1)[-1]][0]
                       for z, insts in proj.instances.items() if ZONES[z] == region for i in insts.values())
            limit = proj.cpu_quota.get(region)
            if limit is not None and used + cpus > limit:
                raise ApiError(403, f"Quota 'CPUS' exceeded.  Limit: {float(limit)} in region {region}.",
                               "QUOTA_EXCEEDED")
            base = f"{self.url}/compute/v1/projects/{proj.name}"
            attached = []
            for i, disk in enumerate(disks):
                params = disk.get("initializeParams") or {}
                dname = params.get("diskName") or (name if i == 0 else f"{name}-{i}")
                image = (params.get("sourceImage") or "").rsplit("/", 1)[-1]
                dtype = (params.get("diskType") or "pd-balanced").rsplit("/", 1)[-1]
                size = params.get("diskSizeGb") or (proj.images[image]["diskSizeGb"] if image else "10")
                if image:
                    proj.contents[f"disks/{zone}/{dname}"] = proj.contents[f"images/{image}"]
                proj.disks.setdefault(zone, {})[dname] = {
                    "kind": "compute#disk", "id": str(next(_ids)), "name": dname, "sizeGb": str(size),
                    "zone": f"{base}/zones/{zone}", "status": "READY",
                    "sourceImage": f"{base}/global/images/{image}" if image else "",
                    "type": f"{base}/zones/{zone}/diskTypes/{dtype}",
                    "selfLink": f"{base}/zones/{zone}/disks/{dname}",
                    "users": [f"{base}/zones/{zone}/instances/{name}"],
                }
                attached.append({"kind": "compute#attachedDisk", "boot": bool(disk.get("boot")), "index": i,
                                 "autoDelete": bool(disk.get("autoDelete")), "deviceName": dname,
                                 "source": f"{base}/zones/{zone}/disks/{dname}", "type": "PERSISTENT"})
            nics_out = [{
                "name": f"nic{i}", "network": f"{base}/global/networks/default",
                "subnetwork": f"{base}/regions/{region}/subnetworks/"
                              + (n.get("subnetwork") or "default").rsplit("/", 1)[-1],
                "networkIP": f"10.128.0.{10 + i}", "nicType": n.get("nicType", ""),
            } for i, n in enumerate(nics)]
            proj.instances.setdefault(zone, {})[name] = {
                "kind": "compute#instance", "id": str(next(_ids)), "name": name, "status": "RUNNING",
                "machineType": f"{base}/zones/{zone}/machineTypes/{mtype}", "zone": f"{base}/zones/{zone}",
                "disks": attached, "networkInterfaces": nics_out, "labels": body.get("labels") or {},
                "tags": body.get("tags") or {}, "metadata": body.get("metadata") or {},
                "guestAccelerators": [], "selfLink": f"{base}/zones/{zone}/instances/{name}",
                "cpuPlatform": "Intel Cascade Lake", "memoryMb": mem,
            }

        return self._operation(proj, "zone", zone, f"zones/{zone}/instances/{name}", "insert", work)

    def _delete_instance(self, proj: Project, zone: str, name: str) -> dict[str, Any]:
        inst = proj.instances.get(zone, {}).get(name)
        if inst is None:
            raise _not_found(f"projects/{proj.name}/zones/{zone}/instances/{name}")

        def work() -> None:
            proj.instances[zone].pop(name, None)
            for d in inst["disks"]:
                if d["autoDelete"]:
                    proj.disks.get(zone, {}).pop(d["deviceName"], None)
                else:
                    proj.disks[zone][d["deviceName"]]["users"] = []

        return self._operation(proj, "zone", zone, f"zones/{zone}/instances/{name}", "delete", work)

    def _stop_instance(self, proj: Project, zone: str, name: str) -> dict[str, Any]:
        inst = proj.instances.get(zone, {}).get(name)
        if inst is None:
            raise _not_found(f"projects/{proj.name}/zones/{zone}/instances/{name}")
        inst["status"] = "STOPPING"

        def work() -> None:
            inst["status"] = "TERMINATED"  # GCE's word for a stopped instance

        return self._operation(proj, "zone", zone, f"zones/{zone}/instances/{name}", "stop", work)

    def _create_snapshot(self, proj: Project, zone: str, disk: dict[str, Any], body: dict[str, Any]) -> dict[str, Any]:
        name = body.get("name", "")
        if not _NAME.match(name):
            raise ApiError(400, f"Invalid value for field 'resource.name': '{name}'.", "invalid")
        if name in proj.snapshots:
            raise ApiError(409, f"The resource 'projects/{proj.name}/global/snapshots/{name}' already exists",
                           "alreadyExists")
        base = f"{self.url}/compute/v1/projects/{proj.name}"
        snap = {"kind": "compute#snapshot", "id": str(next(_ids)), "name": name, "status": "CREATING",
                "diskSizeGb": disk["sizeGb"], "sourceDisk": disk["selfLink"], "labels": body.get("labels") or {},
                "description": body.get("description", ""), "selfLink": f"{base}/global/snapshots/{name}"}
        proj.snapshots[name] = snap
        content = proj.contents.get(f"disks/{zone}/{disk['name']}")

        def work() -> None:
            if content is None:
                raise ApiError(400, f"disk {disk['name']} holds no bytes the fake knows", "invalid")
            proj.contents[f"snapshots/{name}"] = content
            snap["status"] = "READY"

        return self._operation(proj, "zone", zone, f"zones/{zone}/disks/{disk['name']}", "createSnapshot", work)

    def _snapshots(self, proj: Project, method: str, rest: list[str], query: dict[str, list[str]]) -> Any:
        if not rest:
            items = list(proj.snapshots.values())
            return {"items": _labelled(items, query)}
        name = rest[0]
        if name not in proj.snapshots:
            raise _not_found(f"projects/{proj.name}/global/snapshots/{name}")
        if method == "DELETE":
            def delete() -> None:
                proj.snapshots.pop(name, None)
                proj.contents.pop(f"snapshots/{name}", None)

            return self._operation(proj, "global", "global", f"global/snapshots/{name}", "delete", delete)
        return proj.snapshots[name]

    # -- Cloud Build (only the image-export build gcloud submits) ------------------------------

    def _cloud_build(self, method: str, p: list[str], body: Any, email: str) -> Any:
        proj = self._project(p[0], email, "cloudbuild.builds.create" if method == "POST" else "cloudbuild.builds.get")
        if p[1:] == ["builds"] and method == "POST":
            build_id = str(uuid.uuid4())
            build = {"id": build_id, "projectId": proj.name, "status": "QUEUED", "steps": body.get("steps") or [],
                     "tags": body.get("tags") or [], "createTime": time.strftime("%Y-%m-%dT%H:%M:%SZ"),
                     "logUrl": f"{self.url}/cloud-build/{build_id}"}
            proj.builds[build_id] = build
            threading.Thread(target=self._run_build, args=(proj, build), daemon=True).start()
            return {"name": f"operations/build/{proj.name}/{base64.b64encode(build_id.encode()).decode()}",
                    "metadata": {"@type": "type.googleapis.com/google.devtools.cloudbuild.v1.BuildOperationMetadata",
                                 "build": build}}
        if len(p) == 3 and p[1] == "builds":
            build_id, _, verb = p[2].partition(":")
            build = proj.builds.get(build_id)
            if build is None:
                raise ApiError(404, f"Build {build_id} not found", "notFound")
            if verb == "cancel" and method == "POST" and build["status"] in ("QUEUED", "WORKING"):
                build["status"] = "CANCELLED"
            return build
        raise ApiError(404, f"fake Cloud Build does not serve {method} /v1/projects/{'/'.join(p)}", "notFound")

    def _run_build(self, proj: Project, build: dict[str, Any]) -> None:
        time.sleep(self.op_delay)
        if build["status"] == "CANCELLED":
            return
        build["status"] = "WORKING"
        try:
            steps = build["steps"]
            if len(steps) != 1 or "gce_vm_image_export" not in steps[0].get("name", ""):
                raise ValueError("the fake runs only the gce_vm_image_export step")
            args = dict(a.lstrip("-").partition("=")[::2] for a in steps[0].get("args") or [])
            image = args.get("source_image", "").rsplit("/", 1)[-1]
            if args.get("format"):
                raise ValueError(f"the fake exports only the default format (tar.gz), not {args['format']}")
            for role in ("roles/compute.admin", "roles/iam.serviceAccountUser"):
                if role not in proj.cloudbuild_roles:
                    # Daisy's words when the build's account may not make its scratch VM and disks
                    raise ValueError(f"step import-image failed: Required 'compute.instances.create' permission "
                                     f"for 'projects/{proj.name}': the Cloud Build service account lacks {role}")
            with self.lock:
                source = proj.contents.get(f"images/{image}")
            if source is None:
                raise ValueError(f"The resource 'projects/{proj.name}/global/images/{image}' was not found")
            m = re.fullmatch(r"gs://([^/]+)/(.+)", args.get("destination_uri", ""))
            if not m:
                raise ValueError(f"-destination_uri is not a gs:// URI: {args.get('destination_uri')!r}")
            data = self._export_tarball(source)
            if build["status"] == "CANCELLED":
                return
            r = requests.post(f"{self.storage_url}/upload/storage/v1/b/{m.group(1)}/o",
                              params={"uploadType": "media", "name": m.group(2)}, data=data,
                              headers={"Content-Type": "application/gzip"}, timeout=120)
            r.raise_for_status()
            build["status"] = "SUCCESS"
        except Exception as e:
            build.update(status="FAILURE", statusDetail=f"Build step 0 failed: {e}",
                         failureInfo={"type": "USER_BUILD_STEP", "detail": str(e)})
        build["finishTime"] = time.strftime("%Y-%m-%dT%H:%M:%SZ")

    def _export_tarball(self, source: str) -> bytes:
        """What Daisy's ``gce_export`` writes: gzip'd GNU tar, ``disk.raw`` a regular file of the whole disk.

        Deflated in full-flushed pieces, so that an all-zero piece (most of a disk) is deflated once and
        its bytes repeated: the same stream a single deflate would inflate to, at a fraction of its cost.
        """
        piece = 8 * 1024 * 1024
        zeros = bytes(piece)

        def deflated(data: bytes) -> bytes:
            c = zlib.compressobj(1, zlib.DEFLATED, -15)  # raw deflate: the gzip wrapper is written here
            return c.compress(data) + c.flush(zlib.Z_FULL_FLUSH)

        zero_piece = deflated(zeros)
        out, crc, total = io.BytesIO(), 0, 0

        def put(data: bytes) -> None:
            nonlocal crc, total
            out.write(zero_piece if data == zeros else deflated(data))
            crc, total = zlib.crc32(data, crc), total + len(data)

        out.write(b"\x1f\x8b\x08\x00" + int(time.time()).to_bytes(4, "little") + b"\x00\xff")  # gzip header
        with self._open_tar(source) as tf:
            member = tf.next()
            assert member is not None
            reader = tf.extractfile(member)
            assert reader is not None
            header = tarfile.TarInfo("disk.raw")
            header.size, header.mode, header.mtime = member.size, 0o600, int(time.time())
            put(header.tobuf(format=tarfile.GNU_FORMAT))
            while chunk := reader.read(piece):
                put(chunk)
            put(b"\0" * ((-member.size) % 512 + 1024))
        out.write(zlib.compressobj(1, zlib.DEFLATED, -15).flush())  # the final (empty) block
        out.write(crc.to_bytes(4, "little") + (total % 2**32).to_bytes(4, "little"))
        return out.getvalue()

    def route(self, method: str, path: str, query: dict[str, list[str]], body: Any, email: str) -> Any:
        if path.startswith("/v1/projects/"):
            return self._cloud_build(method, path.removeprefix("/v1/projects/").split("/"), body, email)
        p = path.removeprefix("/compute/v1/projects/").split("/")
        proj = self._project(p[0], email, "compute.projects.get" if len(p) == 1 else f"compute.{p[-1]}.list")
        rest, base = p[1:], f"{self.url}/compute/v1/projects/{proj.name}"
        with self.lock:
            if not rest:
                return {"kind": "compute#project", "name": proj.name, "id": str(abs(hash(proj.name)) % 10**12),
                        "selfLink": base}
            if rest == ["zones"]:
                return {"items": [{"name": z, "region": f"{base}/regions/{r}", "status": "UP",
                                   "selfLink": f"{base}/zones/{z}"} for z, r in ZONES.items()]}
            if rest[0] == "zones" and len(rest) == 2:
                self._zone(rest[1])
                return {"name": rest[1], "region": f"{base}/regions/{ZONES[rest[1]]}", "status": "UP"}
            if rest[0] == "zones" and rest[2] == "machineTypes":
                zone = rest[1]
                self._zone(zone)
                items = {n: {"kind": "compute#machineType", "name": n, "guestCpus": c, "memoryMb": m, "zone": zone,
                             "selfLink": f"{base}/zones/{zone}/machineTypes/{n}"}
                         for n, (c, m) in MACHINE_TYPES.items()}
                if len(rest) == 4:
                    if rest[3] not in items:
                        raise _not_found(f"projects/{proj.name}/zones/{zone}/machineTypes/{rest[3]}")
                    return items[rest[3]]
                return {"items": list(items.values())}
            if rest[0] == "zones" and rest[2] == "diskTypes":
                self._zone(rest[1])
                return {"items": [{"name": d, "selfLink": f"{base}/zones/{rest[1]}/diskTypes/{d}"} for d in DISK_TYPES]}
            if rest == ["global", "networks"]:
                return {"items": [{"name": "default", "selfLink": f"{base}/global/networks/default"}]}
            if rest[0] == "regions" and len(rest) >= 3 and rest[2] == "subnetworks":
                subs = proj.subnetworks.get(rest[1])
                if subs is None:
                    raise _not_found(f"projects/{proj.name}/regions/{rest[1]}")
                items = {s: {"name": s, "network": f"{base}/global/networks/{n}", "region": rest[1],
                             "ipCidrRange": "10.128.0.0/20", "selfLink": f"{base}/regions/{rest[1]}/subnetworks/{s}"}
                         for s, n in subs.items()}
                if len(rest) == 4:
                    if rest[3] not in items:
                        raise _not_found(f"projects/{proj.name}/regions/{rest[1]}/subnetworks/{rest[3]}")
                    return items[rest[3]]
                return {"items": list(items.values())}
            if rest[:2] == ["global", "images"]:
                return self._images(proj, method, rest[2:], query, body)
            if rest[:2] == ["global", "operations"] or (rest[0] == "zones" and rest[2:3] == ["operations"]):
                name = rest[2] if rest[0] == "global" else rest[3]
                op = proj.operations.get(name)
                if op is None:
                    raise _not_found(f"projects/{proj.name}/{'/'.join(rest)}")
            else:
                op = None
            if rest == ["aggregated", "instances"]:
                return {"items": {f"zones/{z}": {"instances": list(i.values())}
                                  for z, i in proj.instances.items() if i}}
            if rest[0] == "zones" and rest[2] == "instances":
                zone = rest[1]
                self._zone(zone)
                if method == "POST" and len(rest) == 3:
                    return self._insert_instance(proj, zone, body)
                if len(rest) == 3:
                    return {"items": list(proj.instances.get(zone, {}).values())}
                if method == "DELETE":
                    return self._delete_instance(proj, zone, rest[3])
                if method == "POST" and rest[4:] == ["stop"]:
                    return self._stop_instance(proj, zone, rest[3])
                inst = proj.instances.get(zone, {}).get(rest[3])
                if inst is None:
                    raise _not_found(f"projects/{proj.name}/zones/{zone}/instances/{rest[3]}")
                return inst
            if rest[0] == "zones" and rest[2] == "disks":
                self._zone(rest[1])
                if len(rest) == 3:
                    return {"items": list(proj.disks.get(rest[1], {}).values())}
                disk = proj.disks.get(rest[1], {}).get(rest[3])
                if disk is None:
                    raise _not_found(f"projects/{proj.name}/zones/{rest[1]}/disks/{rest[3]}")
                if rest[4:] == ["createSnapshot"] and method == "POST":
                    return self._create_snapshot(proj, rest[1], disk, body or {})
                return disk
            if rest[:2] == ["global", "snapshots"]:
                return self._snapshots(proj, method, rest[2:], query)
        if op is not None:
            if rest[-1] == "wait":
                op.done.wait(self.wait_timeout)
            return op.json(self.url + "/compute/v1", proj.name)
        raise ApiError(404, f"fake GCE does not serve {method} {path}", "notFound")

    def _images(self, proj: Project, method: str, rest: list[str], query: dict[str, list[str]],
                body: Any) -> Any:
        if method == "POST" and not rest:
            name = body.get("name", "")
            if not _NAME.match(name):
                raise ApiError(400, f"Invalid value for field 'resource.name': '{name}'.", "invalid")
            if name in proj.images:
                raise ApiError(409, f"The resource 'projects/{proj.name}/global/images/{name}' already exists",
                               "alreadyExists")
            snapshot = (body.get("sourceSnapshot") or "").rsplit("/", 1)[-1]
            if not (body.get("rawDisk") or {}).get("source") and not snapshot:
                raise ApiError(400, "Required field 'resource.rawDisk.source' not specified", "required")
            if snapshot and snapshot not in proj.snapshots:
                raise _not_found(f"projects/{proj.name}/global/snapshots/{snapshot}")
            image = {**body, "kind": "compute#image", "id": str(next(_ids)), "status": "PENDING",
                     "selfLink": f"{self.url}/compute/v1/projects/{proj.name}/global/images/{name}"}
            proj.images[name] = image

            def work() -> None:
                try:
                    if snapshot:
                        image.update(status="READY", diskSizeGb=proj.snapshots[snapshot]["diskSizeGb"])
                        proj.contents[f"images/{name}"] = proj.contents[f"snapshots/{snapshot}"]
                    else:
                        self._import_image(image)
                        proj.contents[f"images/{name}"] = image["rawDisk"]["source"]
                except Exception:
                    # As on GCE, an insert whose operation failed leaves no image behind.
                    with self.lock:
                        proj.images.pop(name, None)
                    raise

            return self._operation(proj, "global", "global", f"global/images/{name}", "insert", work)
        if not rest:
            items = list(proj.images.values())
            return {"items": _labelled(items, query)}
        name = rest[0]
        if name not in proj.images:
            raise _not_found(f"projects/{proj.name}/global/images/{name}")
        if method == "DELETE":
            def delete() -> None:
                proj.images.pop(name, None)
                proj.contents.pop(f"images/{name}", None)

            return self._operation(proj, "global", "global", f"global/images/{name}", "delete", delete)
        return proj.images[name]

    # -- HTTP --------------------------------------------------------------------------------

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def _send(self, status: int, payload: dict[str, Any]) -> None:
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json; charset=UTF-8")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _handle(self, method: str) -> None:
                url = urlparse(self.path)
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if url.path == "/token":
                    self._send(*fake._token({k: v[0] for k, v in parse_qs(raw.decode()).items()}))
                    return
                body = json.loads(raw) if raw else None
                fake.requests.append((method, url.path, body))
                token = (self.headers.get("Authorization") or "").removeprefix("Bearer ")
                email = fake.tokens.get(token)
                if email is None and token.count(".") == 2:
                    # A self-signed JWT, which google-auth sends to Google APIs instead of an access token.
                    with contextlib.suppress(KeyError, ValueError):
                        email = fake.verify_jwt(token)
                if email is None:
                    self._send(401, {"error": {"code": 401, "status": "UNAUTHENTICATED", "message":
                                     "Request had invalid authentication credentials. Expected OAuth 2 access "
                                     "token, login cookie or other valid authentication credential.",
                                     "errors": [{"reason": "required", "domain": "global",
                                                 "message": "Login Required."}]}})
                    return
                try:
                    result = fake.route(method, unquote(url.path), parse_qs(url.query), body, email)
                except ApiError as e:
                    self._send(e.code, {"error": {"code": e.code, "message": e.message, "errors": [
                        {"domain": "global", "reason": e.reason, "message": e.message}]}})
                    return
                self._send(200, result)

            def do_GET(self) -> None:
                self._handle("GET")

            def do_POST(self) -> None:
                self._handle("POST")

            def do_DELETE(self) -> None:
                self._handle("DELETE")

        return Handler


def _labelled(items: list[dict[str, Any]], query: dict[str, list[str]]) -> list[dict[str, Any]]:
    """``items`` that match a list call's ``filter``; only ``labels.<key> = <value>`` is understood."""
    m = re.fullmatch(r"\s*labels\.([a-z0-9_-]+)\s*=\s*\"?([^\"]*)\"?\s*", (query.get("filter") or [""])[0])
    if not m:
        return items
    return [i for i in items if (i.get("labels") or {}).get(m.group(1)) == m.group(2)]
