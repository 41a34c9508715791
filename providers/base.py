"""Provider capability contracts.

A provider is a class named by ``PLUGIN_NAME`` (the Coriolis endpoint ``type``, e.g.
``"local"``, ``"aws"``, ``"vmware_vsphere"``). What it can do is the set of capability
classes it inherits, exactly as Coriolis derives its provider-type bitmask::

    class AwsProvider(EndpointProvider, InstancesProvider, ExportProvider, ImportProvider):
        PLUGIN_NAME = "aws"

and registers it in ``pyproject.toml``::

    [project.entry-points."sterna.providers"]
    aws = "providers.aws.provider:AwsProvider"

Rules every provider follows:

* Control-plane methods are synchronous (cloud SDKs are); activities call them in threads.
  Data-plane methods (``import_disk``) are ``async`` so that copying heartbeats and sees
  cancellation through the ``TransferContext``.
* Errors are raised from ``core.errors`` (``AuthenticationFailed``, ``NotFound``,
  ``InvalidInput``...). Never let an SDK exception carry credentials into a message.
* Nothing here is imported by workflow code; the registry imports providers lazily.
* ``env`` is the user's environment, as given. What the engine owns (the action id the resources are
  tagged with, ``network_map``, change tracking...) comes in the ``ActionContext`` next to it.
"""

from __future__ import annotations

import asyncio
import enum
import threading
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from core.models import (
    DeployedInstance,
    DiskLocator,
    ImportedDisk,
    InstanceInfo,
    NetworkInfo,
    OptionValues,
    SourceSnapshot,
    StorageInfo,
)

# Re-exported: the disk engine owns the progress shape that providers report.
from diskio.progress import TransferProgress as TransferProgress

if TYPE_CHECKING:
    from diskio.base import DiskSource, DiskTarget, Extent
    from diskio.checkpoint import Checkpointer


class ProviderType(enum.IntFlag):
    """Coriolis provider-type bits, as returned by ``GET /providers``."""

    DESTINATION = 4  # TRANSFER_IMPORT
    SOURCE = 8  # TRANSFER_EXPORT
    ENDPOINT = 16
    ENDPOINT_INSTANCES = 32
    OS_MORPHING = 64
    ENDPOINT_NETWORKS = 128
    DESTINATION_OPTIONS = 512
    ENDPOINT_STORAGE = 32768
    SOURCE_OPTIONS = 131072


@dataclass
class TransferContext:
    """What a data-moving call gets from the activity that runs it.

    ``checkpoint`` holds the done ranges of a previous attempt (resume from there; an empty
    list: an attempt began the copy and finished no chunk, None: no attempt began it);
    awaiting ``progress`` heartbeats to Temporal and records Coriolis progress updates,
    and raises ``asyncio.CancelledError`` once the migration is cancelled. ``durable`` keeps the
    done ranges in a checkpoint file in scratch as chunks complete (pass it to ``copy_disk``):
    heartbeats reach the server too rarely to resume from.
    """

    workdir: Path
    progress: Callable[[TransferProgress], Awaitable[None]]
    checkpoint: list[tuple[int, int]] | None = None
    bandwidth_limit: int | None = None
    event: Callable[[str], None] = field(default=lambda _msg: None)
    durable: Checkpointer | None = None

    async def aevent(self, message: str) -> None:
        """``event`` from async code: it writes to the record DB, which must not hold up the event loop
        (the activity's heartbeats, and a cancel, go through that loop)."""
        await asyncio.to_thread(self.event, message)


@dataclass(frozen=True)
class ActionContext:
    """What the engine tells a provider about the action a call works for.

    The activity builds it once from its step input and passes it next to the environment, which
    stays the user's: providers never read (or find) engine-owned keys in ``env``. The default,
    ``NO_ACTION``, is a call outside any action (an inventory tool, a test): nothing to tag with.
    """

    #: the migration, transfer or deployment; the value resources are tagged with, so that a
    #: retry finds what an earlier attempt made and cleanup finds what is left
    action_id: str | None = None
    #: the instance as the action names it
    instance: str = ""
    #: the transfer execution, for transfers
    execution_id: str | None = None
    #: the name the destination instance gets (the source's name unless the user chose one)
    instance_name: str | None = None
    #: the source instance's name, as its export info gives it: destinations tag what they make for the
    #: instance with it, and its cleanup finds by it what is the instance's own, never a sibling's of the
    #: same action (None before the source was read: nothing can have been made for the instance yet)
    source_name: str | None = None
    project_id: str | None = None
    #: Coriolis ``network_map`` and ``storage_mappings`` of the action
    network_map: Mapping[str, Any] = field(default_factory=dict)
    storage_mappings: Mapping[str, Any] = field(default_factory=dict)
    #: a transfer id: the snapshot also starts tracking changes for it (``ChangeTrackingSource``)
    change_tracking: str | None = None
    #: a transfer execution writes replica disks only: no instance is deployed
    replica_only: bool = False
    #: set when the step is cancelled: a long blocking call (a download, a wait for a cloud's snapshot)
    #: checks it and ends early, since a thread can't be interrupted from outside
    stop: threading.Event = field(default_factory=threading.Event, compare=False, repr=False)

    @property
    def tags(self) -> dict[str, str]:
        """What every resource made for the action carries, keyed by meaning; each provider spells the
        keys its cloud's way (``migration-id``: AWS ``sterna:migration-id``, Azure ``sterna-migration-id``)."""
        return {MIGRATION_ID: self.action_id} if self.action_id else {}


#: ``ActionContext.tags`` key of the action id
MIGRATION_ID = "migration-id"
#: a provider call made outside any action
NO_ACTION = ActionContext()


class BaseProvider(ABC):
    """Root of every provider. ``connection_info`` is already resolved (never a secret ref)."""

    PLUGIN_NAME: ClassVar[str]
    #: bit that this class contributes to the provider-type mask
    TYPE_BITS: ClassVar[ProviderType] = ProviderType(0)

    def __init__(self, connection_info: Mapping[str, Any]) -> None:
        self.connection_info = dict(connection_info)

    @classmethod
    def provider_types(cls) -> list[int]:
        """Coriolis provider-type values this class supports, sorted."""
        mask = ProviderType(0)
        for klass in cls.__mro__:
            mask |= klass.__dict__.get("TYPE_BITS", ProviderType(0))
        return sorted(int(bit) for bit in ProviderType if bit & mask)


class EndpointProvider(BaseProvider):
    """Bit 16: connection validation and its schema."""

    TYPE_BITS = ProviderType.ENDPOINT

    @classmethod
    def connection_info_schema(cls) -> dict[str, Any]:
        """JSON schema of ``connection_info`` (draft 4 style, as Coriolis serves it)."""
        return {"type": "object"}

    @abstractmethod
    def validate_connection(self) -> None:
        """Check that the endpoint is reachable with these credentials.

        Raises ``AuthenticationFailed``, ``ConnectionFailed`` or ``InvalidInput`` with a
        message that names the cause (and no secret).
        """


class InstancesProvider(BaseProvider):
    """Bit 32: inventory of VMs and templates."""

    TYPE_BITS = ProviderType.ENDPOINT_INSTANCES

    @abstractmethod
    def list_instances(self, env: Mapping[str, Any], name_filter: str | None = None) -> list[InstanceInfo]:
        """All instances (VMs and templates) visible to this endpoint."""

    @abstractmethod
    def get_instance(self, env: Mapping[str, Any], instance: str) -> InstanceInfo:
        """One instance by name or id; raises ``NotFound``."""


class NetworksProvider(BaseProvider):
    """Bit 128."""

    TYPE_BITS = ProviderType.ENDPOINT_NETWORKS

    @abstractmethod
    def list_networks(self, env: Mapping[str, Any]) -> list[NetworkInfo]:
        """Networks an instance can be attached to."""


class StorageProvider(BaseProvider):
    """Bit 32768."""

    TYPE_BITS = ProviderType.ENDPOINT_STORAGE

    @abstractmethod
    def list_storage(self, env: Mapping[str, Any]) -> StorageInfo:
        """Storage backends (datastores, volume types, pools)."""


class DestinationOptionsProvider(BaseProvider):
    """Bit 512."""

    TYPE_BITS = ProviderType.DESTINATION_OPTIONS

    @abstractmethod
    def destination_options(self, env: Mapping[str, Any]) -> list[OptionValues]:
        """Choices for ``destination_environment`` keys (flavors, regions, ...)."""


class SourceOptionsProvider(BaseProvider):
    """Bit 131072."""

    TYPE_BITS = ProviderType.SOURCE_OPTIONS

    @abstractmethod
    def source_options(self, env: Mapping[str, Any]) -> list[OptionValues]:
        """Choices for ``source_environment`` keys."""


class ExportProvider(InstancesProvider):
    """Bit 8: a migration source."""

    TYPE_BITS = ProviderType.SOURCE

    @classmethod
    def source_environment_schema(cls) -> dict[str, Any]:
        """JSON schema of ``source_environment``."""
        return {"type": "object"}

    def validate_source(self, env: Mapping[str, Any], instance: str) -> InstanceInfo:
        """Check that ``instance`` can be exported; returns its ``export_info``."""
        return self.get_instance(env, instance)

    def shutdown_instance(self, env: Mapping[str, Any], instance: str) -> None:
        """Power the instance off before its snapshot (``shutdown_instances``). Default: no-op."""

    @abstractmethod
    def snapshot_instance(self, env: Mapping[str, Any], instance: str, workdir: Path,
                          action: ActionContext = NO_ACTION) -> SourceSnapshot:
        """Freeze a point-in-time view of every disk of ``instance``.

        Must be idempotent for the same ``workdir`` (activities run at least once).
        """

    @abstractmethod
    def open_disk(self, snapshot: SourceSnapshot, disk: DiskLocator) -> DiskSource:
        """A ``diskio`` source reading the snapshot's guest-visible bytes of one disk."""

    def source_host(self, snapshot: SourceSnapshot) -> str | None:
        """The physical source a disk read loads (an ESXi host, a hypervisor), or None for no limit.

        At most ``STERNA_MAX_TRANSFERS_PER_SOURCE_HOST`` exports read from one at a time, across workers.
        """
        return None

    @abstractmethod
    def delete_snapshot(self, snapshot: SourceSnapshot) -> None:
        """Remove what ``snapshot_instance`` created; must tolerate being called twice."""


class ChangeTrackingSource(BaseProvider):
    """A source that can tell which areas of a disk changed since an earlier snapshot.

    When ``action.change_tracking`` is set, ``snapshot_instance`` puts in each disk's
    ``details["change_marker"]`` the marker of that point in time (a CBT changeId, a qcow2 dirty
    bitmap, an EBS snapshot id). A transfer keeps the marker of the last good sync of each replica.
    """

    @abstractmethod
    def changed_extents(self, snapshot: SourceSnapshot, disk: DiskLocator, marker: str) -> list[Extent] | None:
        """Areas of ``disk`` that may differ from what it held at ``marker`` (may over-approximate,
        never under); ``None`` when the marker is unknown here and everything must be compared."""

    def release_tracking(self, env: Mapping[str, Any], instance: str, transfer_id: str) -> list[str]:
        """Drop what tracks changes for the transfer ``transfer_id`` on ``instance``
        (its replica is gone); returns what was removed. Idempotent. Default: nothing to drop."""
        return []


class ImportProvider(BaseProvider):
    """Bit 4: a migration destination."""

    TYPE_BITS = ProviderType.DESTINATION
    #: qemu-img output format the destination wants its disks in
    TARGET_DISK_FORMAT: ClassVar[str] = "raw"
    #: ``qemu-img convert -o`` options for that format (e.g. a fixed VHD: ``["subformat=fixed", "force_size=on"]``)
    TARGET_DISK_OPTIONS: ClassVar[list[str]] = []
    #: OS-morphing target platform: "kvm", "aws", "azure" or "gcp"
    TARGET_PLATFORM: ClassVar[str] = "kvm"
    #: Windows conversion target when it differs from TARGET_PLATFORM (openstack: its metadata service)
    WINDOWS_TARGET: ClassVar[str | None] = None
    #: ``check_destination_environment`` asks the destination something: the API runs it on a worker
    #: when a migration is created (a round trip it spares the providers that check nothing then)
    CHECKS_AT_CREATE: ClassVar[bool] = False

    @classmethod
    def destination_environment_schema(cls) -> dict[str, Any]:
        """JSON schema of ``destination_environment``."""
        return {"type": "object"}

    def check_destination_environment(self, env: Mapping[str, Any], network_map: Mapping[str, Any]) -> None:
        """What can be checked before any instance is known (credentials, the size and networks
        named), at create time: ``InvalidInput`` or ``AuthenticationFailed`` makes it a 400."""

    def validate_destination(self, env: Mapping[str, Any], export_info: InstanceInfo,
                             action: ActionContext = NO_ACTION) -> None:
        """Fail fast (``InvalidInput``) when the target environment can't host this instance."""

    @abstractmethod
    async def import_disk(
        self,
        env: Mapping[str, Any],
        export_info: InstanceInfo,
        disk: DiskLocator,
        ctx: TransferContext,
        action: ActionContext = NO_ACTION,
    ) -> ImportedDisk:
        """Move one converted local disk (``disk.path`` in ``TARGET_DISK_FORMAT``) to the target."""

    @abstractmethod
    def deploy_instance(
        self,
        env: Mapping[str, Any],
        export_info: InstanceInfo,
        disks: list[ImportedDisk],
        action: ActionContext = NO_ACTION,
    ) -> DeployedInstance:
        """Create (and start) the target instance with the mapped flavor, networks, storage."""

    @abstractmethod
    def cleanup(
        self,
        env: Mapping[str, Any],
        instance: str,
        disks: list[ImportedDisk],
        deployed: DeployedInstance | None,
        succeeded: bool,
        action: ActionContext = NO_ACTION,
    ) -> list[str]:
        """Release temporary resources; on failure also delete what was created.

        Returns human-readable lines describing what was removed (they become task events).
        Must tolerate partial state and repeated calls.
        """


class BootVerifier(BaseProvider):
    """Check that a deployed instance really booted (console output, serial log)."""

    @abstractmethod
    def verify_boot(self, env: Mapping[str, Any], deployed: DeployedInstance, timeout: float,
                    on_stage: Callable[[str], None] | None = None) -> list[str]:
        """Return evidence lines when userspace came up; raise ``ProviderError`` otherwise.

        ``on_stage`` (thread-safe) is told each boot stage as it is seen, one line each ("kernel at 14s:
        ..."), so a long check shows progress. A state the guest never leaves raises
        ``core.errors.BootFailed``; no verdict in time raises ``core.errors.BootInconclusive``.
        """


class ReplicaProvider(BaseProvider):
    """A transfer destination that keeps *replica disks*: raw files written in place, read back.

    Each transfer execution brings them up to date; each deployment takes a copy-on-write
    view of them (so they are local files the worker can reach): in the destination's own storage
    (``local``), or in Sterna's replica store for a cloud that can't take in-place writes
    (``providers.replica_store.StoredReplicas``).
    """

    @abstractmethod
    def replica_disk(self, env: Mapping[str, Any], transfer_id: str, instance: str, disk_id: str,
                     size_bytes: int) -> DiskLocator:
        """Where the replica of one source disk lives (its parent folder exists on return)."""

    @abstractmethod
    def delete_replica_disks(self, env: Mapping[str, Any], transfer_id: str) -> list[str]:
        """Remove every replica disk of a transfer; returns what was removed. Idempotent."""


class SnapshotReplicaProvider(BaseProvider):
    """A transfer destination whose replica disk is a chain of snapshots (EBS ``ParentSnapshotId``).

    Each execution writes only the chunks that differ into a *child* of the replica's last
    snapshot; a failed or cancelled execution discards its child, so the replica stays the last
    good snapshot. Chunks are ``REPLICA_CHUNK`` bytes: whole blocks of the snapshot service.
    """

    REPLICA_CHUNK: ClassVar[int]

    @abstractmethod
    def start_replica_snapshot(self, env: Mapping[str, Any], transfer_id: str, instance: str, disk_id: str,
                               size_bytes: int, parent: str | None,
                               execution_id: str | None = None) -> tuple[str, DiskTarget]:
        """A new snapshot (a child of ``parent``, or empty) and a target writing into it; the target's
        ``flush`` completes it. Zero chunks written into a child overwrite the parent's data.
        ``execution_id``: the transfer execution writing it, for ``pending_replica_snapshot``."""

    def pending_replica_snapshot(self, env: Mapping[str, Any], transfer_id: str, instance: str, disk_id: str,
                                 size_bytes: int, parent: str | None,
                                 execution_id: str) -> tuple[str, DiskTarget] | None:
        """The snapshot an earlier attempt of ``execution_id`` started over ``parent`` and never
        completed (a killed worker), and a target writing more into it, whose writes the service keeps:
        a retry resumes there. None (the default): there is none, and the retry starts a new one."""
        return None

    @abstractmethod
    def discard_replica_snapshot(self, env: Mapping[str, Any], snapshot_id: str) -> None:
        """Delete a snapshot this transfer started (tolerates a missing one)."""

    @abstractmethod
    def open_replica_snapshot(self, env: Mapping[str, Any], snapshot_id: str, size_bytes: int) -> DiskSource:
        """The whole disk a replica snapshot stands for (its chain composed), read-only; blocking to open.

        A deployment reads it into local scratch, the base that OS morphing's overlay sits on."""

    @abstractmethod
    async def import_replica_delta(self, env: Mapping[str, Any], export_info: InstanceInfo, disk: DiskLocator,
                                   view: DiskSource | None, changed: list[Extent], ctx: TransferContext,
                                   action: ActionContext = NO_ACTION) -> ImportedDisk:
        """A deployment's disk: a new child of replica snapshot ``disk.details["replica_snapshot"]``
        holding ``view``'s bytes in the ``changed`` areas (the whole snapshot blocks around them) and
        nothing else, so it reads as the replica with the deployment's changes. ``changed`` empty: a
        child with no blocks of its own (``view`` may then be None).

        The replica snapshot itself is never written. The child is the deployment's, like any
        imported disk: ``cleanup`` removes it by the same rules. Idempotent for the same action and disk.
        """

    @abstractmethod
    def delete_replica_disks(self, env: Mapping[str, Any], transfer_id: str) -> list[str]:
        """Remove every replica snapshot of a transfer; returns what was removed. Idempotent."""
