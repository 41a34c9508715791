"""Session fixtures: a real embedded stack (Temporal dev server, worker, API) per record-DB backend."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from client.sdk import SternaClient
from core.settings import Settings
from devstack.appliance import tcg_appliance_env
from devstack.guest import cache_root
from devstack.launcher import Stack
from tests.peers import cache_lock, free_port, postgres_database
from tests.peers.gated import plugin_path

# libguestfs builds its appliance (supermin) on first use, then reuses it while the host's packages are
# unchanged. Keeping it beside the guest images makes "a fresh machine" one folder: ~/.cache/sterna.
# Under TCG the appliance boots the host kernel unpacked (devstack/appliance.py: about 3 CPU-s less per
# launch, some fifty launches a run); a developer's own LIBGUESTFS_CACHEDIR or SUPERMIN_KERNEL wins.
if not {"LIBGUESTFS_CACHEDIR", "SUPERMIN_KERNEL"} & os.environ.keys():
    with cache_lock(cache_root().parent / "appliance-kernel.lock"):
        os.environ.update(tcg_appliance_env(cache_root().parent))
os.environ.setdefault("LIBGUESTFS_CACHEDIR", str(cache_root().parent / "libguestfs"))
Path(os.environ["LIBGUESTFS_CACHEDIR"]).mkdir(parents=True, exist_ok=True)

FINAL = {"COMPLETED", "ERROR", "CANCELED"}
# Keystone, Barbican, Glance and the fake compute API; Azurite and the fake ARM: for the tests that ask for them.
pytest_plugins = ["tests.peers.openstack.fixtures", "tests.peers.azure.fixtures", "tests.phases", "tests.scheduling"]


class PipelineClient(SternaClient):
    """The API client of the pipeline tests: OS morphing off unless a test asks for it.

    These tests are about moving and recording disks; their sample disks hold a Linux tree but no
    kernel, and a libguestfs appliance per migration would cost minutes. Morphing has its own
    end-to-end tests (``tests/osmorphing``, ``tests/api/test_morphing_migration.py``).
    """

    def create_migration(self, **fields: Any) -> dict[str, Any]:
        fields.setdefault("skip_os_morphing", True)
        return super().create_migration(**fields)

    def _call(self, method: str, path: str, json: Any = None, params: dict[str, Any] | None = None) -> Any:
        if method == "POST" and path == "/migrations" and isinstance(json, dict) and "migration" in json:
            json = {"migration": {"skip_os_morphing": True, **json["migration"]}}
        return super()._call(method, path, json, params)


@pytest.fixture(scope="session")
def guest_builds(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Start building the Debian test guests in the background (``tests/guests/debian.py``).

    The cloud-init variant first: the first TCG test in the suite's order (AWS morphing) needs it.
    """
    from tests.guests.debian import prebuild

    prebuild(True, False, empty_cache=tmp_path_factory.mktemp("guest-cache-from-empty"))


@pytest.fixture(scope="session", autouse=True)
def prebuilt_guests(request: pytest.FixtureRequest) -> None:
    """Start at session start what the selected tests will wait for: guest builds, OpenStack's venv.

    Under xdist the worker that takes the TCG group isn't known here; it takes that group first, so its
    first test starts the builds (``guest_builds``) at once anyway.
    """
    items = request.session.items
    if not hasattr(request.config, "workerinput") and any(item.get_closest_marker("tcg") for item in items):
        request.getfixturevalue("guest_builds")
    if any("openstack" in getattr(item, "fixturenames", ()) for item in items):
        # Keystone's, Barbican's and Glance's venv (minutes of pip on a fresh machine) installs meanwhile;
        # under xdist every worker asks, and one installs while the others wait (``ensure_venv``).
        from tests.peers.openstack.servers import ensure_venv

        threading.Thread(target=ensure_venv, name="openstack-venv", daemon=True).start()


@dataclass
class RunningStack:
    stack: Stack
    settings: Settings
    url: str
    backend: str
    root: Path

    def client(self, project: str = "test-project") -> SternaClient:
        return PipelineClient(self.url, project)

    def inventory(self, name: str) -> Path:
        path = self.root / "inventories" / name
        path.mkdir(parents=True, exist_ok=True)
        return path


@pytest.fixture(scope="session", params=["sqlite", "postgresql"])
def stack(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningStack]:
    root = tmp_path_factory.mktemp(f"stack-{request.param}")
    with ExitStack() as cleanup:
        db_url = (f"sqlite:///{root / 'sterna.db'}" if request.param == "sqlite"
                  else cleanup.enter_context(postgres_database()))
        env = {
            "STERNA_DATA_DIR": str(root),
            "STERNA_DATABASE_URL": db_url,
            "STERNA_API_HOST": "127.0.0.1",
            "STERNA_API_PORT": str(free_port()),
            "TEMPORAL_ADDRESS": f"127.0.0.1:{free_port()}",
            "STERNA_TEMPORAL_UI_PORT": str(free_port()),
            "STERNA_WORKER_HOST_ID": f"test-{request.param}",
            # Short heartbeat timeouts so a killed worker's activity is retried within seconds. Not
            # shorter: under the suite's TCG load a worker process can get no CPU for 2-4 s.
            "STERNA_HEARTBEAT_TIMEOUT": "8",
            "STERNA_RETRY_MAX_INTERVAL": "2",
            "STERNA_SECRET_KEY": "8wQjO5X0Qm3h2dT0FZ5y0Y6xHkGv1tq3N4j9w8m0a0E=",
            "STERNA_WORKER_METRICS_ADDRESS": f"127.0.0.1:{free_port()}",
            "STERNA_TEMPORAL_METRICS_ADDRESS": f"127.0.0.1:{free_port()}",
        }
        old = {k: os.environ.get(k) for k in env}
        os.environ.update(env)
        settings = Settings()
        # Test-only providers (``tests.peers.gated``): registered for the stack's processes alone.
        plugins = os.pathsep.join(filter(None, [os.environ.get("PYTHONPATH"), str(plugin_path(root))]))
        stack = Stack(settings, env={**env, "PYTHONPATH": plugins})
        try:
            stack.start()
            yield RunningStack(stack, settings, f"http://127.0.0.1:{settings.api_port}", request.param, root)
        finally:
            stack.stop()
            for k, v in old.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v


def wait_for(predicate: Callable[[], Any], timeout: float = 120, interval: float = 0.2, what: str = "") -> Any:
    """Poll until ``predicate`` returns something truthy; never a blind sleep."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what or predicate}")
        time.sleep(interval)


#: the longest pause between two polls of a migration that has run a while
SLOW_POLL = 2.0


def wait_final(api: SternaClient, migration_id: str, timeout: float = 300) -> dict[str, Any]:
    """Poll a migration until it ends: every 0.3 s at first, then every twentieth of the time
    waited so far, up to ``SLOW_POLL``.

    A migration's full view is the API's costliest read, and the long ones (morphs, Windows
    boots) ran for minutes at 0.3 s: about a tenth of the suite's CPU went to answering them. The
    pause stays within 5 % of the wait, so a short migration is still seen ending at once.
    """
    started = time.monotonic()
    deadline = started + timeout
    while True:
        m = api.get_migration(migration_id)
        if m["last_execution_status"] in FINAL:
            return m
        now = time.monotonic()
        if now > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for migration {migration_id} to finish")
        time.sleep(min(SLOW_POLL, max(0.3, (now - started) / 20)))


def task(migration: dict[str, Any], instance: str, task_type: str) -> dict[str, Any]:
    return next(t for t in migration["tasks"] if t["instance"] == instance and t["task_type"] == task_type)
