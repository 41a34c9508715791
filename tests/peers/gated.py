"""A test-only ``gated-local`` provider: the local provider, with steps a test can hold open.

The trials of ``tests/workflows/test_step_trials.py`` kill the worker or cancel a migration *inside*
one step. Snapshot, upload, deploy and cleanup of the local provider take milliseconds, so this
subclass can hold each of them at a gate, a file the test creates before the migration and removes
to let the step go on. The step appends a line to ``<gate>.entered`` when it reaches the gate, so a
test knows it is there. Convert runs ``qemu-img`` in the activity, not in a provider: a gated
endpoint may instead ask for a rate-limited conversion (``convert_rate``, bytes/s), which makes the
real ``qemu-img convert`` last long enough to be killed or cancelled mid-way.

Production code knows nothing of this: the stack's processes find the provider through an
entry point of the ``sterna.providers`` group that only the test fixture puts on their path
(``plugin_path``).
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from core.models import DeployedInstance, ImportedDisk, SourceSnapshot
from providers.base import ActionContext
from providers.local.provider import LocalProvider
from tests.peers import provider_plugins

PLATFORM = "gated-local"
#: the steps a gate can hold, each at a point where it has done its work but not yet returned
STEPS = ("snapshot", "upload", "deploy", "cleanup")
#: the gate that holds a transfer execution's release of its snapshot: the cleanup of a step that
#: deploys nothing (``ActionContext.replica_only``); "cleanup" holds that of a migration or a deployment
RELEASE = "release"
#: the gate that holds a snapshot before its copy starts
SNAPSHOT_START = "snapshot-start"
#: the gate that holds a deployment before it makes anything at the destination
DEPLOY_START = "deploy-start"
#: the file beside the gates where deploy calls and cleanups (not a transfer's release) note when they ran
JOURNAL = "journal"
DEPLOY_RETURNED, CLEANUP_STARTED = "deploy returned", "cleanup started"
POLL = 0.1


def plugin_path(root: Path) -> Path:
    """A folder to put on the stack's ``PYTHONPATH``: its dist-info registers this provider."""
    return provider_plugins(root / "test-plugins", "sterna_test_peers", {PLATFORM: f"{__name__}:GatedLocalProvider"})


class GatedLocalProvider(LocalProvider):
    PLUGIN_NAME = PLATFORM

    def __init__(self, connection_info: Mapping[str, Any]) -> None:
        info = dict(connection_info)
        gates = info.pop("gates", None)
        rate = info.pop("convert_rate", None)
        super().__init__(info)
        self.gates = Path(gates) if gates else None
        if rate:
            self.TARGET_DISK_OPTIONS = ["-r", str(int(rate))]

    @classmethod
    def connection_info_schema(cls) -> dict[str, Any]:
        schema = super().connection_info_schema()
        schema["properties"] = {**schema["properties"], "gates": {"type": "string"},
                                "convert_rate": {"type": "integer", "minimum": 1}}
        return schema

    def _gate(self, step: str) -> Path | None:
        """The gate file of ``step`` if it is closed; its arrival is noted in ``<gate>.entered``."""
        gate = self.gates / step if self.gates else None
        if gate is None or not gate.exists():
            return None
        with open(gate.with_name(f"{step}.entered"), "a") as entered:
            entered.write(f"{os.getpid()}\n")
        return gate

    def _hold(self, step: str) -> None:
        """Called from the activity's thread, while the activity heartbeats in the background."""
        gate = self._gate(step)
        while gate is not None and gate.exists():
            time.sleep(POLL)

    # The overrides pass their arguments through as they come: the base signatures grow (an action
    # context, for one) and these gates don't depend on them.
    def snapshot_instance(self, *args: Any, **kwargs: Any) -> SourceSnapshot:
        self._hold(SNAPSHOT_START)
        snapshot = super().snapshot_instance(*args, **kwargs)
        self._hold("snapshot")  # the copy is in scratch; the workflow does not know it yet
        return snapshot

    async def import_disk(self, *args: Any, **kwargs: Any) -> ImportedDisk:
        imported = await super().import_disk(*args, **kwargs)
        # The disk is in the destination; the activity has not returned (its task heartbeats meanwhile).
        await asyncio.to_thread(self._hold, "upload")
        return imported

    def _note(self, what: str) -> None:
        """Append to ``<gates>/journal``: the order in which deploy calls and cleanups ran."""
        if self.gates is not None:
            with open(self.gates / JOURNAL, "a") as journal:
                journal.write(f"{what}\n")

    def deploy_instance(self, *args: Any, **kwargs: Any) -> DeployedInstance:
        try:
            self._hold(DEPLOY_START)
            deployed = super().deploy_instance(*args, **kwargs)
            self._hold("deploy")  # domain.xml and vm.json are written
            return deployed
        finally:
            self._note(DEPLOY_RETURNED)

    def cleanup(self, *args: Any, **kwargs: Any) -> list[str]:
        action = next((a for a in (*args, *kwargs.values()) if isinstance(a, ActionContext)), None)
        release = action is not None and action.replica_only
        if not release:
            self._note(CLEANUP_STARTED)
        removed = super().cleanup(*args, **kwargs)
        # the source snapshot is gone, the scratch space not yet
        self._hold(RELEASE if release else "cleanup")
        return removed
