"""Coriolis execution and task statuses: the record DB stores them, workflows set them, the API shows them.

Here, below both the store and the workflows, so that neither imports the other. Stdlib-only:
workflows import it inside the sandbox.
"""

from __future__ import annotations

from enum import StrEnum


class Status(StrEnum):
    """Coriolis execution and task statuses that Sterna uses."""

    SCHEDULED = "SCHEDULED"
    PENDING = "PENDING"
    RUNNING = "RUNNING"
    CANCELLING = "CANCELLING"
    COMPLETED = "COMPLETED"
    ERROR = "ERROR"
    CANCELED = "CANCELED"
    UNSCHEDULED = "UNSCHEDULED"
    FORCE_CANCELED = "FORCE_CANCELED"
    #: a transfer that has never run an execution
    UNEXECUTED = "UNEXECUTED"


FINAL_STATUSES = frozenset({Status.COMPLETED, Status.ERROR, Status.CANCELED})
