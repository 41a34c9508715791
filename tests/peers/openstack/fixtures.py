"""Session fixtures for the OpenStack tests: the real peers, the fake compute API, a Keystone-mode stack.

Only tests that ask for ``openstack`` or ``keystone_stack`` pay for them (~1-2 min the first
time in a session, plus the one-time creation of the servers' venv).
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from client.sdk import SternaClient
from core.settings import Settings
from devstack.launcher import Stack
from tests.conftest import RunningStack
from tests.peers import free_port
from tests.peers.openstack.fake_nova import FakeNova
from tests.peers.openstack.servers import ADMIN_PASSWORD, OpenStackPeers

SERVICE_PASSWORD = "sterna-service-pw"
REPO = Path(__file__).resolve().parents[3]
#: the deployment's policy file in the keystone stack: creating needs member (or admin)
POLICY = '"migration:migrations:create": "role:admin or role:member"\n' \
         '"migration:endpoints:create": "role:admin or role:member"\n'


@dataclass
class OpenStackCloud:
    peers: OpenStackPeers
    nova: FakeNova

    @property
    def auth_url(self) -> str:
        return self.peers.auth_url

    def admin_env(self) -> dict[str, str]:
        return {"OS_AUTH_URL": self.auth_url, "OS_USERNAME": "admin", "OS_PASSWORD": ADMIN_PASSWORD,
                "OS_PROJECT_NAME": "admin", "OS_USER_DOMAIN_ID": "default", "OS_PROJECT_DOMAIN_ID": "default"}


@pytest.fixture(scope="session")
def openstack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OpenStackCloud]:
    root = tmp_path_factory.mktemp("openstack")
    nova = FakeNova(root / "nova")
    nova.start()
    peers = OpenStackPeers(root)
    try:
        peers.start(compute_url=nova.url)
        nova.auth_url = peers.auth_url
        nova.glance_url = peers.servers["glance"].url
        yield OpenStackCloud(peers, nova)
    finally:
        peers.stop()
        nova.stop()


@dataclass
class KeystoneStack(RunningStack):
    cloud: OpenStackCloud | None = None
    register_output: str = ""

    def as_user(self, user: str) -> SternaClient:
        """A client for ``user`` in its own project, with a fresh Keystone token."""
        assert self.cloud is not None
        u = self.cloud.peers.users[user]
        return SternaClient(self.url, u.project_id, token=self.cloud.peers.token(user))


def register_cli(cloud: OpenStackCloud, api_port: int, *extra: str) -> str:
    """``deploy/keystone-register`` (= ``sterna keystone register``) with admin OS_* credentials."""
    env = {**os.environ, **cloud.admin_env(), "STERNA_KEYSTONE_PASSWORD": SERVICE_PASSWORD}
    out = subprocess.run([sys.executable, str(REPO / "deploy" / "keystone-register"), "--host", "127.0.0.1",
                          "--port", str(api_port), *extra], env=env, capture_output=True, text=True, timeout=120,
                         check=False)
    assert out.returncode == 0, out.stderr
    return out.stdout


@pytest.fixture(scope="session")
def keystone_stack(openstack: OpenStackCloud, tmp_path_factory: pytest.TempPathFactory) -> Iterator[KeystoneStack]:
    root = tmp_path_factory.mktemp("stack-keystone")
    api_port = free_port()
    registered = register_cli(openstack, api_port)
    policy = root / "policy.yaml"
    policy.write_text(POLICY)
    env = {
        "STERNA_DATA_DIR": str(root),
        "STERNA_DATABASE_URL": f"sqlite:///{root / 'sterna.db'}",
        "STERNA_API_HOST": "127.0.0.1",
        "STERNA_API_PORT": str(api_port),
        "TEMPORAL_ADDRESS": f"127.0.0.1:{free_port()}",
        "STERNA_TEMPORAL_UI_PORT": str(free_port()),
        "STERNA_WORKER_HOST_ID": "test-keystone",
        "STERNA_HEARTBEAT_TIMEOUT": "8",  # as tests/conftest.py's stacks
        "STERNA_RETRY_MAX_INTERVAL": "2",
        "STERNA_SECRET_KEY": "8wQjO5X0Qm3h2dT0FZ5y0Y6xHkGv1tq3N4j9w8m0a0E=",
        "STERNA_AUTH_STRATEGY": "keystone",
        "STERNA_KEYSTONE_AUTH_URL": openstack.auth_url,
        "STERNA_KEYSTONE_USERNAME": "sterna",
        "STERNA_KEYSTONE_PASSWORD": SERVICE_PASSWORD,
        "STERNA_KEYSTONE_PROJECT_NAME": "service",
        "STERNA_POLICY_FILE": str(policy),
        # Its own ports: a ``stack`` fixture of the same pytest process has put its ports in os.environ,
        # which this stack's processes inherit (its worker then died on "Address already in use").
        "STERNA_WORKER_METRICS_ADDRESS": f"127.0.0.1:{free_port()}",
        "STERNA_TEMPORAL_METRICS_ADDRESS": f"127.0.0.1:{free_port()}",
    }
    # Settings read the environment; the processes get ``env`` explicitly, so restore at once.
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        settings = Settings()
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    stack = Stack(settings, env=env)
    try:
        stack.start()
        yield KeystoneStack(stack, settings, f"http://127.0.0.1:{api_port}", "sqlite", root, cloud=openstack,
                            register_output=registered)
    finally:
        stack.stop()


def keystone_admin(cloud: OpenStackCloud) -> Any:
    return cloud.peers.admin()
