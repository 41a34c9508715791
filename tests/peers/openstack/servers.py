"""Real Keystone, Barbican and Glance from PyPI, SQLite-backed, on free loopback ports.

The servers pin their own SQLAlchemy, eventlet and oslo.* versions, so they live in their own
virtualenv outside the repository (``$STERNA_OPENSTACK_VENV``, default
``~/.cache/sterna/openstack-venv``), created with pip on first use and reused afterwards.
Each runs under gunicorn (one worker, four threads). The recipes and pitfalls are in
/work/shared/reference/peers-openstack.md; the comments below say which pitfall a line avoids.

``OpenStackPeers.start()`` brings up Keystone (fernet tokens, bcrypt rounds lowered and an
in-memory cache, for speed), registers the ``image``, ``key-manager`` and ``compute``/``network``
(the in-repo fake, see ``fake_nova``) services, the Sterna service user, two tenant projects
with a member each and a reader-only user, then Barbican and Glance.
"""

from __future__ import annotations

import base64
import os
import signal
import subprocess
import sys
import threading
import time
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from tests.peers import cache_lock, free_port

VERSIONS = ["keystone==30.0.0", "barbican==23.0.0", "glance==33.0.0", "gunicorn==27.0.1"]
ADMIN_PASSWORD = "s3cret-admin"


def venv_path() -> Path:
    return Path(os.environ.get("STERNA_OPENSTACK_VENV", Path.home() / ".cache" / "sterna" / "openstack-venv"))


_venv_lock = threading.Lock()


def ensure_venv() -> Path:
    """Create the servers' venv once; a stamp naming the versions marks it complete.

    Thread- and process-safe: each pytest-xdist worker starts it in the background at session start
    (``tests/conftest.py``), and the fixture that needs it waits here for that install instead of
    starting a second one.
    """
    with _venv_lock, cache_lock(venv_path().parent / "openstack-venv.lock"):
        return _ensure_venv()


def _ensure_venv() -> Path:
    venv = venv_path()
    stamp = venv / ".sterna-stamp"
    want = " ".join(VERSIONS)
    if stamp.exists() and stamp.read_text() == want:
        return venv
    venv.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True)
    subprocess.run([str(venv / "bin" / "pip"), "install", "-q", "--disable-pip-version-check", *VERSIONS],
                   check=True)
    stamp.write_text(want)
    return venv


@dataclass
class Server:
    name: str
    port: int
    pidfile: Path
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        with suppress(FileNotFoundError, ValueError, ProcessLookupError):
            pid = int(self.pidfile.read_text().strip())
            os.kill(pid, signal.SIGTERM)
            deadline = time.monotonic() + 15
            while time.monotonic() < deadline:
                os.kill(pid, 0)
                time.sleep(0.1)
            os.kill(pid, signal.SIGKILL)


@dataclass
class User:
    name: str
    password: str
    id: str
    project_id: str
    project_name: str


@dataclass
class OpenStackPeers:
    root: Path
    venv: Path = field(default_factory=venv_path)
    servers: dict[str, Server] = field(default_factory=dict)
    users: dict[str, User] = field(default_factory=dict)
    ids: dict[str, str] = field(default_factory=dict)
    ports: dict[str, int] = field(default_factory=dict)

    # -- lifecycle ----------------------------------------------------------------------------------
    def start(self, compute_url: str | None = None) -> None:
        self.venv = ensure_venv()
        self.ports = {"keystone": free_port(), "barbican": free_port(), "glance": free_port()}
        # The one-time setup commands are mostly Python import time: run them side by side.
        setup = [*self._keystone_prepare(), *self._barbican_prepare(), *self._glance_prepare()]
        procs = [(cmd, subprocess.Popen(cmd, cwd=cwd, env=self._env(**env), stdout=subprocess.PIPE,
                                        stderr=subprocess.STDOUT, text=True)) for cmd, cwd, env in setup]
        for cmd, proc in procs:
            out, _ = proc.communicate(timeout=300)
            if proc.returncode != 0:
                raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{out}")
        self._keystone_serve()
        self._register(compute_url)
        self._serve("barbican", self.root / "barbican", ["bb_wsgi:application"])
        self._serve("glance", self.root / "glance", ["glance.wsgi.api:application"],
                    OS_GLANCE_CONFIG_DIR=str(self.root / "glance"))
        for name in ("barbican", "glance"):
            self._ready(self.servers[name], "/")

    def stop(self) -> None:
        for server in reversed(list(self.servers.values())):
            server.stop()

    @property
    def auth_url(self) -> str:
        return f"http://127.0.0.1:{self.ports['keystone']}/v3"

    def _bin(self, name: str) -> str:
        return str(self.venv / "bin" / name)

    def _env(self, **extra: str) -> dict[str, str]:
        # The servers must not see our venv's packages.
        env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")}
        env["PATH"] = f"{self.venv / 'bin'}:{env.get('PATH', '')}"
        env["PYTHONWARNINGS"] = "ignore"
        return {**env, **extra}

    def _run(self, *cmd: str, cwd: Path | None = None, **env: str) -> None:
        out = subprocess.run(list(cmd), capture_output=True, text=True, env=self._env(**env), cwd=cwd,
                             check=False, timeout=300)
        if out.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed ({out.returncode}):\n{out.stdout}\n{out.stderr}")

    # -- keystone -----------------------------------------------------------------------------------
    def _keystone_prepare(self) -> list[tuple[list[str], Path, dict[str, str]]]:
        d = self.root / "keystone"
        d.mkdir(parents=True, exist_ok=True)
        conf = d / "keystone.conf"
        # password_hash_rounds must be set before bootstrap, or admin keeps the slow hash.
        conf.write_text(f"""[DEFAULT]
log_file = {d}/keystone.log
[database]
connection = sqlite:///{d}/keystone.db
[token]
provider = fernet
[fernet_tokens]
key_repository = {d}/fernet-keys
[fernet_receipts]
key_repository = {d}/fernet-keys
[credential]
key_repository = {d}/credential-keys
[identity]
password_hash_rounds = 4
[cache]
enabled = true
backend = dogpile.cache.memory
""")
        km = [self._bin("keystone-manage"), "--config-file", str(conf)]
        user, group = _user_group()
        return [([*km, "db_sync"], d, {}),
                ([*km, "fernet_setup", "--keystone-user", user, "--keystone-group", group], d, {}),
                ([*km, "credential_setup", "--keystone-user", user, "--keystone-group", group], d, {})]

    def _keystone_serve(self) -> None:
        d, port = self.root / "keystone", self.ports["keystone"]
        conf = d / "keystone.conf"
        km = [self._bin("keystone-manage"), "--config-file", str(conf)]
        url = f"http://127.0.0.1:{port}/v3/"
        self._run(*km, "bootstrap", "--bootstrap-password", ADMIN_PASSWORD, "--bootstrap-region-id", "RegionOne",
                  "--bootstrap-admin-url", url, "--bootstrap-internal-url", url, "--bootstrap-public-url", url)
        # keystone's CONF() would parse gunicorn's argv: the shim trims it.
        (d / "ks_wsgi.py").write_text(
            "import os, sys\nsys.argv = sys.argv[:1]\n"
            f"os.environ['OS_KEYSTONE_CONFIG_FILES'] = {str(conf)!r}\n"
            "from keystone.wsgi.api import application  # noqa: E402\n")
        self._serve("keystone", d, ["ks_wsgi:application"])
        self._ready(self.servers["keystone"], "/v3")

    def _serve(self, name: str, d: Path, app: list[str], **env: str) -> None:
        server = Server(name, self.ports[name], d / "gunicorn.pid", d / "gunicorn.log")
        # --no-control-socket: gunicorn 27's control socket has a fixed per-user path, so
        # several instances would overwrite each other's.
        cmd = [self._bin("gunicorn"), "-b", f"127.0.0.1:{server.port}", "-w", "1", "--threads", "4",
               "--timeout", "600", "--no-control-socket", "--pythonpath", str(d), "--pid", str(server.pidfile),
               "--daemon", "--error-logfile", str(server.log), *app]
        self._run(*cmd, cwd=d, **env)
        self.servers[name] = server

    @staticmethod
    def _ready(server: Server, path: str) -> None:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            with suppress(httpx.HTTPError):
                if httpx.get(server.url + path, timeout=2).status_code < 500:
                    return
            time.sleep(0.1)
        raise RuntimeError(f"{server.name} did not start on {server.url}; see {server.log}")

    def admin(self) -> httpx.Client:
        r = httpx.post(f"{self.auth_url}/auth/tokens", json=_password_body("admin", ADMIN_PASSWORD, "admin"))
        r.raise_for_status()
        return httpx.Client(base_url=self.auth_url, headers={"X-Auth-Token": r.headers["X-Subject-Token"]},
                            timeout=30)

    def _register(self, compute_url: str | None) -> None:
        with self.admin() as a:
            def create(coll: str, key: str, body: dict[str, Any]) -> str:
                r = a.post(f"/{coll}", json={key: body})
                r.raise_for_status()
                return str(r.json()[key]["id"])

            def role(name: str) -> str:
                found = a.get("/roles", params={"name": name}).json()["roles"]
                return str(found[0]["id"]) if found else create("roles", "role", {"name": name})

            def grant(project: str, user: str, role_name: str) -> None:
                a.put(f"/projects/{project}/users/{user}/roles/{role(role_name)}").raise_for_status()

            service = create("projects", "project", {"name": "service", "domain_id": "default"})
            self.ids["service_project"] = service
            services = [("barbican", "key-manager", f"http://127.0.0.1:{self.ports['barbican']}"),
                        ("glance", "image", f"http://127.0.0.1:{self.ports['glance']}")]
            if compute_url:
                services += [("nova", "compute", f"{compute_url}/compute/v2.1"),
                             ("neutron", "network", f"{compute_url}/network")]
            for name, stype, url in services:
                uid = create("users", "user", {"name": name, "password": name + "pw", "domain_id": "default"})
                grant(service, uid, "service")
                sid = create("services", "service", {"type": stype, "name": name})
                for iface in ("public", "internal", "admin"):
                    create("endpoints", "endpoint", {"service_id": sid, "interface": iface,
                                                     "region_id": "RegionOne", "url": url})
            # Sterna's own service user and catalog entry are made by the code under test
            # (deploy/keystone_register.py), not here.
            for project, member, reader in (("tenant-a", "alice", "rita"), ("tenant-b", "bob", None)):
                pid = create("projects", "project", {"name": project, "domain_id": "default"})
                for uname, role_name in ((member, "member"), (reader, "reader")):
                    if uname is None:
                        continue
                    pw = uname + "-pw"
                    uid = create("users", "user", {"name": uname, "password": pw, "domain_id": "default",
                                                   "default_project_id": pid})
                    grant(pid, uid, role_name)
                    self.users[uname] = User(uname, pw, uid, pid, project)

    def token(self, user: str) -> str:
        u = self.users[user]
        r = httpx.post(f"{self.auth_url}/auth/tokens", json=_password_body(u.name, u.password, u.project_name))
        r.raise_for_status()
        return r.headers["X-Subject-Token"]

    def session(self, user: str) -> Any:
        from keystoneauth1.identity import v3
        from keystoneauth1.session import Session

        u = self.users[user]
        return Session(auth=v3.Password(auth_url=self.auth_url, username=u.name, password=u.password,
                                        project_name=u.project_name, user_domain_id="default",
                                        project_domain_id="default"))

    # -- barbican -----------------------------------------------------------------------------------
    def _barbican_prepare(self) -> list[tuple[list[str], Path, dict[str, str]]]:
        d = self.root / "barbican"
        d.mkdir(parents=True, exist_ok=True)
        port = self.ports["barbican"]
        kek = base64.b64encode(os.urandom(32)).decode()
        (d / "barbican.conf").write_text(f"""[DEFAULT]
host_href = http://127.0.0.1:{port}
log_file = {d}/barbican.log
[database]
connection = sqlite:///{d}/barbican.sqlite
[secretstore]
enabled_secretstore_plugins = store_crypto
[crypto]
enabled_crypto_plugins = simple_crypto
[simple_crypto_plugin]
kek = {kek}
[keystone_authtoken]
www_authenticate_uri = {self.auth_url}
auth_url = {self.auth_url}
auth_type = password
username = barbican
password = barbicanpw
project_name = service
user_domain_id = default
project_domain_id = default
""")
        paste = (self.venv / "etc" / "barbican" / "barbican-api-paste.ini").read_text()
        (d / "barbican-api-paste.ini").write_text(paste.replace("/etc/barbican/", f"{d}/"))
        # Each barbican plugin module parses config at import time from default paths, and the
        # shipped WSGI entry hardcodes /etc/barbican's paste file: the shim fixes both.
        (d / "bb_wsgi.py").write_text(f"""import sys
sys.argv = sys.argv[:1]
from barbican.common import config
_orig = config.parse_args
def _parse_args(conf, args=None, usage=None, default_config_files=None):
    return _orig(conf, args=args, usage=usage,
                 default_config_files=default_config_files or [{str(d / 'barbican.conf')!r}])
config.parse_args = _parse_args
config.parse_args(config.CONF)
from paste import deploy
application = deploy.loadapp({'config:' + str(d / 'barbican-api-paste.ini')!r})
""")
        # barbican-manage ignores --config-file's [database] connection: pass -d.
        return [([self._bin("barbican-manage"), "db", "upgrade", "-d", f"sqlite:///{d}/barbican.sqlite"], d, {})]

    # -- glance -------------------------------------------------------------------------------------
    def _glance_prepare(self) -> list[tuple[list[str], Path, dict[str, str]]]:
        d = self.root / "glance"
        for sub in ("images", "staging", "tasks"):
            (d / sub).mkdir(parents=True, exist_ok=True)
        (d / "glance-api-paste.ini").write_text(
            (self.venv / "etc" / "glance" / "glance-api-paste.ini").read_text())
        conf = d / "glance-api.conf"
        conf.write_text(f"""[DEFAULT]
log_file = {d}/glance-api.log
enabled_backends = fs:file
[database]
connection = sqlite:///{d}/glance.sqlite
[glance_store]
default_backend = fs
[fs]
filesystem_store_datadir = {d}/images/
[os_glance_staging_store]
filesystem_store_datadir = {d}/staging/
[os_glance_tasks_store]
filesystem_store_datadir = {d}/tasks/
[paste_deploy]
flavor = keystone
config_file = {d}/glance-api-paste.ini
[keystone_authtoken]
www_authenticate_uri = {self.auth_url}
auth_url = {self.auth_url}
auth_type = password
username = glance
password = glancepw
project_name = service
user_domain_id = default
project_domain_id = default
""")
        return [([self._bin("glance-manage"), "--config-file", str(conf), "db_sync"], d, {})]


def _password_body(user: str, password: str, project: str) -> dict[str, Any]:
    return {"auth": {"identity": {"methods": ["password"], "password": {"user": {
        "name": user, "password": password, "domain": {"id": "default"}}}},
        "scope": {"project": {"name": project, "domain": {"id": "default"}}}}}


def _user_group() -> tuple[str, str]:
    import grp
    import pwd

    return pwd.getpwuid(os.getuid()).pw_name, grp.getgrgid(os.getgid()).gr_name
