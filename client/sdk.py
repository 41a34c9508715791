"""A small Python client for the Sterna (Coriolis v1) REST API, for scripts and batches.

    from client.sdk import SternaClient
    with SternaClient("http://127.0.0.1:7667", project_id="demo") as api:
        m = api.create_migration(origin_endpoint_id=a, destination_endpoint_id=b, instances=["vm-a"])
        api.wait(m["id"])
"""

from __future__ import annotations

import base64
import time
from collections.abc import Callable
from typing import Any

import httpx

FINAL = {"COMPLETED", "ERROR", "CANCELED"}


class ApiError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"{status}: {message}")
        self.status = status
        self.message = message


class SternaClient:
    def __init__(self, url: str = "http://127.0.0.1:7667", project_id: str = "admin", *,
                 token: str | None = None, timeout: float = 120.0) -> None:
        headers = {"X-Auth-Token": token} if token else {}
        self.http = httpx.Client(base_url=f"{url.rstrip('/')}/v1/{project_id}", headers=headers, timeout=timeout)

    def __enter__(self) -> SternaClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.http.close()

    def _call(self, method: str, path: str, json: Any = None, params: dict[str, Any] | None = None) -> Any:
        try:
            r = self.http.request(method, path, json=json, params=params)
        except httpx.RemoteProtocolError:
            # A pooled connection the server closed as we sent on it (an idle keep-alive timing out):
            # the request never reached the application. Only a GET is sent again; it changes nothing.
            if method != "GET":
                raise
            r = self.http.request(method, path, json=json, params=params)
        if r.status_code >= 400:
            try:
                message = r.json()["error"]["message"]
            except (ValueError, KeyError, TypeError):
                message = r.text
            raise ApiError(r.status_code, message)
        return r.json() if r.content else None

    # -- endpoints ---------------------------------------------------------------------------
    def create_endpoint(self, name: str, type: str, connection_info: dict[str, Any],
                        description: str | None = None) -> dict[str, Any]:
        body = {"endpoint": {"name": name, "type": type, "connection_info": connection_info,
                             "description": description}}
        endpoint: dict[str, Any] = self._call("POST", "/endpoints", body)["endpoint"]
        return endpoint

    def list_endpoints(self) -> list[dict[str, Any]]:
        return list(self._call("GET", "/endpoints")["endpoints"])

    def get_endpoint(self, endpoint_id: str) -> dict[str, Any]:
        return dict(self._call("GET", f"/endpoints/{endpoint_id}")["endpoint"])

    def update_endpoint(self, endpoint_id: str, **fields: Any) -> dict[str, Any]:
        return dict(self._call("PUT", f"/endpoints/{endpoint_id}", {"endpoint": fields})["endpoint"])

    def delete_endpoint(self, endpoint_id: str) -> None:
        self._call("DELETE", f"/endpoints/{endpoint_id}")

    def validate_endpoint(self, endpoint_id: str) -> dict[str, Any]:
        return dict(self._call("POST", f"/endpoints/{endpoint_id}/actions",
                               {"validate-connection": None})["validate-connection"])

    def list_instances(self, endpoint_id: str, name: str | None = None) -> list[dict[str, Any]]:
        params = {"name": name} if name else None
        return list(self._call("GET", f"/endpoints/{endpoint_id}/instances", params=params)["instances"])

    def get_instance(self, endpoint_id: str, instance: str) -> dict[str, Any]:
        b64 = base64.urlsafe_b64encode(instance.encode()).decode()
        return dict(self._call("GET", f"/endpoints/{endpoint_id}/instances/{b64}")["instance"])

    def providers(self) -> dict[str, Any]:
        return dict(self._call("GET", "/providers")["providers"])

    # -- migrations --------------------------------------------------------------------------
    def create_migration(self, *, instances: list[str], origin_endpoint_id: str | None = None,
                         destination_endpoint_id: str | None = None, **fields: Any) -> dict[str, Any]:
        body = {"instances": instances, "origin_endpoint_id": origin_endpoint_id,
                "destination_endpoint_id": destination_endpoint_id, **fields}
        return dict(self._call("POST", "/migrations", {"migration": body})["migration"])

    def list_migrations(self, detail: bool = False) -> list[dict[str, Any]]:
        return list(self._call("GET", "/migrations/detail" if detail else "/migrations")["migrations"])

    def get_migration(self, migration_id: str) -> dict[str, Any]:
        return dict(self._call("GET", f"/migrations/{migration_id}")["migration"])

    def cancel_migration(self, migration_id: str, force: bool = False) -> None:
        self._call("POST", f"/migrations/{migration_id}/actions", {"cancel": {"force": force} if force else None})

    def delete_migration(self, migration_id: str) -> None:
        self._call("DELETE", f"/migrations/{migration_id}")

    # -- transfers -----------------------------------------------------------------------------
    def create_transfer(self, *, origin_endpoint_id: str, destination_endpoint_id: str, instances: list[str],
                        scenario: str = "replica", **fields: Any) -> dict[str, Any]:
        body = {"origin_endpoint_id": origin_endpoint_id, "destination_endpoint_id": destination_endpoint_id,
                "instances": instances, "scenario": scenario, **fields}
        return dict(self._call("POST", "/transfers", {"transfer": body})["transfer"])

    def list_transfers(self, detail: bool = False, **params: Any) -> list[dict[str, Any]]:
        return list(self._call("GET", "/transfers/detail" if detail else "/transfers", params=params)["transfers"])

    def get_transfer(self, transfer_id: str, include_task_info: bool = False) -> dict[str, Any]:
        params = {"include_task_info": "true"} if include_task_info else None
        return dict(self._call("GET", f"/transfers/{transfer_id}", params=params)["transfer"])

    def update_transfer(self, transfer_id: str, **fields: Any) -> dict[str, Any]:
        return dict(self._call("PUT", f"/transfers/{transfer_id}", {"transfer": fields})["execution"])

    def delete_transfer(self, transfer_id: str) -> None:
        self._call("DELETE", f"/transfers/{transfer_id}")

    def delete_transfer_disks(self, transfer_id: str) -> dict[str, Any]:
        return dict(self._call("POST", f"/transfers/{transfer_id}/actions", {"delete-disks": None})["execution"])

    def execute_transfer(self, transfer_id: str, shutdown_instances: bool = False,
                         auto_deploy: bool = False) -> dict[str, Any]:
        body = {"execution": {"shutdown_instances": shutdown_instances, "auto_deploy": auto_deploy}}
        return dict(self._call("POST", f"/transfers/{transfer_id}/executions", body)["execution"])

    def list_executions(self, transfer_id: str, detail: bool = False) -> list[dict[str, Any]]:
        path = f"/transfers/{transfer_id}/executions" + ("/detail" if detail else "")
        return list(self._call("GET", path)["executions"])

    def get_execution(self, transfer_id: str, execution_id: str) -> dict[str, Any]:
        return dict(self._call("GET", f"/transfers/{transfer_id}/executions/{execution_id}")["execution"])

    def cancel_execution(self, transfer_id: str, execution_id: str, force: bool = False) -> None:
        self._call("POST", f"/transfers/{transfer_id}/executions/{execution_id}/actions",
                   {"cancel": {"force": force}})

    def delete_execution(self, transfer_id: str, execution_id: str) -> None:
        self._call("DELETE", f"/transfers/{transfer_id}/executions/{execution_id}")

    def wait_execution(self, transfer_id: str, execution_id: str, timeout: float = 3600,
                       interval: float = 0.5) -> dict[str, Any]:
        return self._wait(lambda: self.get_execution(transfer_id, execution_id), "status", timeout, interval)

    # -- transfer schedules ------------------------------------------------------------------
    def create_schedule(self, transfer_id: str, schedule: dict[str, Any], *, enabled: bool = True,
                        expiration_date: str | None = None, shutdown_instance: bool = False,
                        auto_deploy: bool = False) -> dict[str, Any]:
        body = {"schedule": schedule, "enabled": enabled, "expiration_date": expiration_date,
                "shutdown_instance": shutdown_instance, "auto_deploy": auto_deploy}
        return dict(self._call("POST", f"/transfers/{transfer_id}/schedules", body)["schedule"])

    def list_schedules(self, transfer_id: str, show_expired: bool = False) -> list[dict[str, Any]]:
        params = {"show_expired": "true"} if show_expired else None
        return list(self._call("GET", f"/transfers/{transfer_id}/schedules", params=params)["schedules"])

    def get_schedule(self, transfer_id: str, schedule_id: str) -> dict[str, Any]:
        return dict(self._call("GET", f"/transfers/{transfer_id}/schedules/{schedule_id}")["schedule"])

    def update_schedule(self, transfer_id: str, schedule_id: str, **fields: Any) -> dict[str, Any]:
        return dict(self._call("PUT", f"/transfers/{transfer_id}/schedules/{schedule_id}", fields)["schedule"])

    def delete_schedule(self, transfer_id: str, schedule_id: str) -> None:
        self._call("DELETE", f"/transfers/{transfer_id}/schedules/{schedule_id}")

    # -- deployments -------------------------------------------------------------------------
    def create_deployment(self, transfer_id: str, **fields: Any) -> dict[str, Any]:
        body = {"deployment": {"transfer_id": transfer_id, **fields}}
        return dict(self._call("POST", "/deployments", body)["deployment"])

    def list_deployments(self, detail: bool = False, **params: Any) -> list[dict[str, Any]]:
        path = "/deployments/detail" if detail else "/deployments"
        return list(self._call("GET", path, params=params)["deployments"])

    def get_deployment(self, deployment_id: str) -> dict[str, Any]:
        return dict(self._call("GET", f"/deployments/{deployment_id}")["deployment"])

    def cancel_deployment(self, deployment_id: str, force: bool = False) -> None:
        self._call("POST", f"/deployments/{deployment_id}/actions", {"cancel": {"force": force}})

    def delete_deployment(self, deployment_id: str) -> None:
        self._call("DELETE", f"/deployments/{deployment_id}")

    def wait_deployment(self, deployment_id: str, timeout: float = 3600, interval: float = 0.5) -> dict[str, Any]:
        return self._wait(lambda: self.get_deployment(deployment_id), "last_execution_status", timeout, interval)

    def _wait(self, get: Callable[[], dict[str, Any]], field: str, timeout: float, interval: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            item = get()
            if item[field] in FINAL:
                return item
            if time.monotonic() > deadline:
                raise TimeoutError(f"{item['id']} still {item[field]} after {timeout}s")
            time.sleep(interval)

    def wait(self, migration_id: str, timeout: float = 3600, interval: float = 1.0,
             on_update: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
        """Poll until the migration is COMPLETED, ERROR or CANCELED; returns its last view."""
        deadline = time.monotonic() + timeout
        while True:
            m = self.get_migration(migration_id)
            if on_update:
                on_update(m)
            if m["last_execution_status"] in FINAL:
                return m
            if time.monotonic() > deadline:
                raise TimeoutError(f"migration {migration_id} still {m['last_execution_status']} after {timeout}s")
            time.sleep(interval)


def overall_progress(migration: dict[str, Any]) -> tuple[float, str]:
    """Fraction done (0..1) and a one-line description, from tasks and their progress updates."""
    tasks = migration.get("tasks", [])
    if not tasks:
        return 0.0, migration.get("last_execution_status", "")
    done = 0.0
    label = ""
    for t in tasks:
        if t["status"] in ("COMPLETED", "UNSCHEDULED", "CANCELED", "ERROR", "FORCE_CANCELED"):
            done += 1
        elif t["status"] == "RUNNING":
            fractions = [p["current_step"] / p["total_steps"] for p in t["progress_updates"]
                         if p.get("total_steps")]
            done += sum(fractions) / len(fractions) if fractions else 0.0
            label = f"{t['instance']}: {t['task_type']}"
            if t["progress_updates"]:
                label += f" ({t['progress_updates'][-1]['message']})"
    return done / len(tasks), label
