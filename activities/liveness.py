"""``HOST_ALIVE``: a worker answers on its host's probe queue for as long as it lives.

It is registered on a worker of its own (``worker.main``), with slots of its own, so a host whose disk
slots are all held still answers at once: that is what tells a busy host from a lost one
(``workflows.hosts``).
"""

from __future__ import annotations

from temporalio import activity

from activities import names
from workflows.types import HostProbe


@activity.defn(name=names.HOST_ALIVE)
async def host_alive(probe: HostProbe) -> str:
    """The probe queue that answered (the host's own, as the caller asked)."""
    return activity.info().task_queue
