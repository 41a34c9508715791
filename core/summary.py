"""One-line summaries the Temporal UI shows for a workflow: what it moves, at a glance (issue 18).

Pure and stdlib-only: the workflows call it in the sandbox, the API when it starts them.
"""

from __future__ import annotations

from collections.abc import Sequence

#: the ``workflow.patched`` id of the child workflows' summaries (their start commands changed)
CHILD_SUMMARIES = "ui-child-summaries"
#: the ``workflow.patched`` id of the summaries on a transfer execution's and a deployment's activities
#: and on the auto deployment's start. Whether a changed summary alone breaks replay is decided in the
#: compiled sdk-core (temporalio.bridge), which the Python SDK only hands ``user_metadata`` to
#: (``worker/_workflow_instance.py`` copies ``summary`` onto the ScheduleActivityTask / StartChildWorkflowExecution
#: command); unverifiable from the venv, so it is patched like every other command change.
TRANSFER_SUMMARIES = "ui-transfer-activity-summaries"
#: instances named in a summary before "and N more": the UI shows one line
SHOWN = 3


def instances(names: Sequence[str]) -> str:
    shown = ", ".join(names[:SHOWN])
    return f"{shown} and {len(names) - SHOWN} more" if len(names) > SHOWN else shown


def workflow(kind: str, names: Sequence[str], detail: str = "") -> str:
    """``<kind> of <instances>[: <detail>]``, e.g. ``migration of vm-a, vm-b: vmware_vsphere -> aws``."""
    return f"{kind} of {instances(names)}" + (f": {detail}" if detail else "")


def activity(instance: str, task: str) -> str:
    """``<instance>: <TASK>``: what the Temporal UI shows for a step's activity (a disk step adds the disk)."""
    return f"{instance}: {task}"


def of_disk(step: str | None, disk_id: str) -> str | None:
    """A per-disk activity's summary: its step's, then the disk (None when the step has none)."""
    return f"{step} {disk_id}" if step else None
