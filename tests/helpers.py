"""Shared test steps: inventories with sample VMs, endpoints, and migration polling."""

from __future__ import annotations

import json
import subprocess
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from client.sdk import SternaClient
from core.settings import Settings
from devstack.launcher import Stack
from devstack.sample import create_vm
from tests.conftest import RunningStack


def inventories(stack: RunningStack, vms: list[str], data_mib: int = 16) -> tuple[Path, Path]:
    tag = uuid.uuid4().hex[:8]
    src, dst = stack.inventory(f"src-{tag}"), stack.inventory(f"dst-{tag}")
    for i, name in enumerate(vms):
        create_vm(src, name, size=256 * 1024**2, data_mib=data_mib, seed=i + 1)
    return src, dst


def endpoints(api: SternaClient, src: Path, dst: Path) -> tuple[str, str]:
    a = api.create_endpoint(f"src-{src.name}", "local", {"path": str(src)})
    b = api.create_endpoint(f"dst-{dst.name}", "local", {"path": str(dst)})
    return a["id"], b["id"]


def identical(source: Path, target: Path) -> bool:
    out = subprocess.run(["qemu-img", "compare", "-f", "raw", "-F", "qcow2", str(source), str(target)],
                         capture_output=True, text=True, check=False)
    return out.returncode == 0


def running_task(migration: dict[str, Any], task_type: str) -> dict[str, Any] | None:
    for t in migration["tasks"]:
        if t["task_type"] == task_type and t["status"] == "RUNNING":
            return t
    return None


def export_progress(migration: dict[str, Any]) -> tuple[int, int]:
    """(bytes done, bytes total) of the running export, or (0, 0)."""
    t = running_task(migration, "REPLICATE_DISKS")
    if not t or not t["progress_updates"]:
        return 0, 0
    p = t["progress_updates"][-1]
    return p["current_step"], p["total_steps"] or 0


def start_slow_migration(api: SternaClient, src: Path, dst: Path, *, limit_mib: int = 4,
                         **fields: Any) -> dict[str, Any]:
    """Start a one-VM migration capped at ``limit_mib`` MiB/s and wait until its export moves bytes."""
    from tests.conftest import wait_for

    origin, dest = endpoints(api, src, dst)
    m = api.create_migration(origin_endpoint_id=origin, destination_endpoint_id=dest, instances=["vm-a"],
                             source_environment={"bandwidth_limit": limit_mib * 1024 * 1024}, **fields)
    wait_for(lambda: export_progress(api.get_migration(m["id"]))[0] > 0, 60, 0.1, "export under way")
    return m


@contextmanager
def api_env(stack: RunningStack, **env: str) -> Iterator[None]:
    """The API restarted with ``env`` added to its environment, then restarted as it was.

    Only the API process changes; the worker and the workflows it runs keep going.
    """
    from devstack.launcher import wait_port

    def restart_api(values: dict[str, str | None]) -> None:
        proc = stack.stack.procs["api"]
        proc.terminate()
        proc.wait(30)
        for key, value in values.items():
            if value is None:
                stack.stack.env.pop(key, None)
            else:
                stack.stack.env[key] = value
        stack.stack.restart("api")
        wait_port("127.0.0.1", stack.settings.api_port, 60, stack.stack.procs["api"], "api")

    before = {key: stack.stack.env.get(key) for key in env}
    restart_api(dict(env))
    try:
        yield
    finally:
        restart_api(before)


@contextmanager
def default_heartbeat_timeout(stack: RunningStack) -> Iterator[None]:
    """Migrations started meanwhile get the default 30 s heartbeat timeout (the API sets it per workflow).

    The stack's 4 s makes the SDK send heartbeat details every 3.2 s, which hides how rarely they reach
    the server by default: every 24 s. The API is restarted with the default and then without it.
    """
    with api_env(stack, STERNA_HEARTBEAT_TIMEOUT=str(Settings.model_fields["heartbeat_timeout"].default)):
        yield


@contextmanager
def own_api_and_worker(stack: RunningStack, root: Path, **env: str) -> Iterator[Stack]:
    """An API and a worker of their own, on the stack's Temporal server and record DB, stopped (SIGTERM) on exit.

    Their own task queue and host id keep the stack's workflows off this worker and this worker's off
    the stack's; their own data folder keeps their scratch apart (a worker sweeps its scratch at start).
    The stack's inventories stay allowed, so ``inventories(stack, ...)`` serves them too. ``env`` adds
    settings. Their logs are ``<root>/logs/api.log`` and ``worker.log``.
    """
    from tests.peers import free_port

    tag = uuid.uuid4().hex[:8]
    settings = stack.settings.model_copy(update={
        "data_dir": root, "api_port": free_port(), "task_queue": f"own-{tag}", "worker_host_id": f"own-{tag}",
        "worker_metrics_address": f"127.0.0.1:{free_port()}", "temporal_metrics_address": f"127.0.0.1:{free_port()}"})
    own = Stack(settings, log_dir=root / "logs", env={
        **stack.stack.env, "STERNA_DATA_DIR": str(root), "STERNA_API_PORT": str(settings.api_port),
        "STERNA_TASK_QUEUE": settings.task_queue, "STERNA_WORKER_HOST_ID": settings.worker_host_id,
        "STERNA_WORKER_METRICS_ADDRESS": str(settings.worker_metrics_address),
        "STERNA_TEMPORAL_METRICS_ADDRESS": str(settings.temporal_metrics_address),
        "STERNA_LOCAL_ROOTS": json.dumps([str(stack.root / "inventories")]),
        # The stack's API keeps the schema; a second upgrade at once would race it for nothing.
        "STERNA_DB_UPGRADE_ON_START": "false", **env})
    try:
        own.start(with_temporal=False)
        yield own
    finally:
        own.stop()
