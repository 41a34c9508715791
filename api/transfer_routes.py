"""Routes of transfers, their executions and schedules, and deployments; ``/replicas`` for old clients."""

from __future__ import annotations

from starlette.routing import Route

from api import deployments, executions, schedules, transfers


def _transfer_routes(base: str) -> list[Route]:
    one = f"{base}/{{transfer_id}}"
    return [
        Route(base, transfers.index, methods=["GET"]),
        Route(base, transfers.create, methods=["POST"]),
        Route(f"{base}/detail", transfers.detail, methods=["GET"]),
        Route(f"{one}/executions", executions.index, methods=["GET"]),
        Route(f"{one}/executions", executions.create, methods=["POST"]),
        Route(f"{one}/executions/detail", executions.detail, methods=["GET"]),
        Route(f"{one}/executions/{{id}}", executions.show, methods=["GET"]),
        Route(f"{one}/executions/{{id}}", executions.delete, methods=["DELETE"]),
        Route(f"{one}/executions/{{id}}/actions", executions.actions, methods=["POST"]),
        Route(f"{one}/schedules", schedules.index, methods=["GET"]),
        Route(f"{one}/schedules", schedules.create, methods=["POST"]),
        Route(f"{one}/schedules/{{id}}", schedules.show, methods=["GET"]),
        Route(f"{one}/schedules/{{id}}", schedules.update, methods=["PUT"]),
        Route(f"{one}/schedules/{{id}}", schedules.delete, methods=["DELETE"]),
        Route(f"{base}/{{id}}", transfers.show, methods=["GET"]),
        Route(f"{base}/{{id}}", transfers.update, methods=["PUT"]),
        Route(f"{base}/{{id}}", transfers.delete, methods=["DELETE"]),
        Route(f"{base}/{{id}}/actions", transfers.actions, methods=["POST"]),
    ]


def routes(version: str) -> list[Route]:
    return [
        *_transfer_routes(f"{version}/transfers"),
        *_transfer_routes(f"{version}/replicas"),
        Route(f"{version}/deployments", deployments.index, methods=["GET"]),
        Route(f"{version}/deployments", deployments.create, methods=["POST"]),
        Route(f"{version}/deployments/detail", deployments.detail, methods=["GET"]),
        Route(f"{version}/deployments/{{id}}", deployments.show, methods=["GET"]),
        Route(f"{version}/deployments/{{id}}", deployments.delete, methods=["DELETE"]),
        Route(f"{version}/deployments/{{id}}/actions", deployments.actions, methods=["POST"]),
    ]
