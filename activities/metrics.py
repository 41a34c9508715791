"""Sterna's own worker metrics (Prometheus), next to the Temporal SDK's runtime metrics.

Labels are bounded sets: the task type (Coriolis names), the activity name and the provider's
platform; never ids, so a migration does not create its own series. Transfer rate is
``rate(sterna_bytes_moved_total[1m])`` in PromQL; a per-transfer gauge would need the ids.
"""

from __future__ import annotations

from contextvars import ContextVar
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

REGISTRY = CollectorRegistry()

BYTES_MOVED = Counter("sterna_bytes_moved", "Bytes copied by disk transfers (export, upload, replicate)",
                      ["task_type", "provider"], registry=REGISTRY)
ACTIVE_TRANSFERS = Gauge("sterna_active_transfers", "Disk transfers running on this worker",
                         ["task_type"], registry=REGISTRY)
STEP_SECONDS = Histogram("sterna_step_duration_seconds", "Duration of one attempt of a step activity",
                         ["activity", "task_type", "provider", "outcome"], registry=REGISTRY,
                         buckets=(0.1, 0.5, 1, 5, 15, 60, 300, 900, 3600, 4 * 3600, 24 * 3600))


@dataclass
class StepLabels:
    """What one activity attempt learns about itself while it runs (the provider is known only then)."""

    task_type: str = "none"
    providers: set[str] = field(default_factory=set)

    @property
    def provider(self) -> str:
        return "+".join(sorted(self.providers)) or "none"


#: set by the worker's interceptor for each attempt; a mutable holder, so that code running in
#: ``asyncio.to_thread`` (which copies the context) still writes into the same attempt's labels
current_step: ContextVar[StepLabels | None] = ContextVar("sterna_current_step", default=None)


def note_provider(platform: str) -> None:
    labels = current_step.get()
    if labels is not None:
        labels.providers.add(platform)


def labels() -> StepLabels:
    return current_step.get() or StepLabels()
