"""The engine's side of a provider call, split from the user's: an ``ActionContext`` and the user's
environments as the user gave them.

The engine's options travel in ``StepInput``'s own fields. Inputs that workflows scheduled before
those fields existed (still running at an upgrade) carried them inside the environments: this
module is the one place that reads them from there too and takes them out, so that no provider
reads them from ``env``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

from activities.services import Services
from core.models import CHANGE_TRACKING
from providers.base import ActionContext
from workflows.types import StepInput

#: what older workflows added to ``source_environment`` and ``destination_environment``
ENGINE_SOURCE_KEYS = frozenset({"shutdown_instances", CHANGE_TRACKING})
ENGINE_DEST_KEYS = frozenset({"network_map", "storage_mappings", "replica_only"})


def source_env(step: StepInput) -> dict[str, Any]:
    """The user's ``source_environment``, without what the engine put in it."""
    return _without(step.source_environment, ENGINE_SOURCE_KEYS)


def dest_env(step: StepInput) -> dict[str, Any]:
    """The user's ``destination_environment``, without what the engine put in it."""
    return _without(step.destination_environment, ENGINE_DEST_KEYS)


def _without(env: Mapping[str, Any], keys: frozenset[str]) -> dict[str, Any]:
    return {k: v for k, v in env.items() if k not in keys}


def action_context(step: StepInput, project_id: str | None = None) -> ActionContext:
    """The context of every provider call a step makes; built once per activity."""
    src, dst = step.source_environment, step.destination_environment
    # An ``instance_name`` in the user's environment names the destination instance; the source's name otherwise.
    name = dst.get("instance_name") or (step.export_info.name if step.export_info is not None else None)
    return ActionContext(
        action_id=step.task.migration_id, instance=step.task.instance, execution_id=step.task.execution_id,
        instance_name=str(name) if name else None, project_id=project_id,
        source_name=step.export_info.name if step.export_info is not None else None,
        network_map=dict(step.network_map or dst.get("network_map") or {}),
        storage_mappings=dict(step.storage_mappings or dst.get("storage_mappings") or {}),
        change_tracking=step.change_tracking or (str(src[CHANGE_TRACKING]) if src.get(CHANGE_TRACKING) else None),
        replica_only=step.replica_only or bool(dst.get("replica_only")),
    )


def shutdown_requested(step: StepInput) -> bool:
    """Whether the source instance is shut down before its snapshot (``shutdown_instances``)."""
    return step.shutdown_instances or bool(step.source_environment.get("shutdown_instances"))


async def step_context(services: Services, step: StepInput) -> ActionContext:
    """``action_context`` with the action's project, from the record DB."""
    project = await asyncio.to_thread(services.store.action_project, step.task.migration_id)
    return action_context(step, project)
