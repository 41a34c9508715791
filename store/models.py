"""Record DB tables, in Coriolis shapes (endpoints, migrations, executions, tasks, events, progress).

The record DB is what the API reads: it outlives Temporal's retention and answers while
workers are down. Rows are soft-deleted (``deleted``/``deleted_at``) as in Coriolis.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, Boolean, DateTime, ForeignKey, Integer, LargeBinary, String, Text, false, true
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


def new_id() -> str:
    return str(uuid.uuid4())


def utcnow() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


class Base(DeclarativeBase):
    type_annotation_map = {dict[str, Any]: JSON, list[Any]: JSON}


class _Row:
    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    updated_at: Mapped[datetime | None] = mapped_column(DateTime, default=None, onupdate=utcnow)
    deleted_at: Mapped[datetime | None] = mapped_column(DateTime, default=None)
    deleted: Mapped[bool] = mapped_column(Boolean, default=False)


class Endpoint(_Row, Base):
    __tablename__ = "endpoints"

    user_id: Mapped[str | None] = mapped_column(String(255))
    project_id: Mapped[str] = mapped_column(String(255), index=True)
    name: Mapped[str] = mapped_column(String(255))
    type: Mapped[str] = mapped_column(String(255))
    description: Mapped[str | None] = mapped_column(Text)
    #: Fernet token of the JSON connection_info (inline credentials or a secret reference)
    connection_info_enc: Mapped[str] = mapped_column(Text)
    mapped_regions: Mapped[list[Any]] = mapped_column(JSON, default=list)
    #: created implicitly by an inline-form migration; hidden from endpoint listings
    internal: Mapped[bool] = mapped_column(Boolean, default=False)


class Migration(_Row, Base):
    """Coriolis's ``base_transfer_action``: a migration, a transfer or a deployment (``type``)."""

    __tablename__ = "migrations"

    user_id: Mapped[str | None] = mapped_column(String(255))
    project_id: Mapped[str] = mapped_column(String(255), index=True)
    origin_endpoint_id: Mapped[str] = mapped_column(String(36), ForeignKey("endpoints.id"))
    destination_endpoint_id: Mapped[str] = mapped_column(String(36), ForeignKey("endpoints.id"))
    instances: Mapped[list[Any]] = mapped_column(JSON)
    source_environment: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    destination_environment: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    #: Fernet token of ``{reference: value}``: the secret values of the environments, which hold
    #: only references to them (``core.secrets``); deployments reference their transfer's
    environment_secrets: Mapped[str | None] = mapped_column(Text, default=None)
    network_map: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    storage_mappings: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    user_scripts: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    notes: Mapped[str | None] = mapped_column(Text)
    shutdown_instances: Mapped[bool] = mapped_column(Boolean, default=False)
    skip_os_morphing: Mapped[bool] = mapped_column(Boolean, default=False)
    replication_count: Mapped[int] = mapped_column(Integer, default=1)
    last_execution_status: Mapped[str] = mapped_column(String(64), default="RUNNING")
    #: per-instance results (export_info, deployed instance) keyed by instance name
    info: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    workflow_id: Mapped[str | None] = mapped_column(String(255))
    #: Keystone trust (caller -> service user) that the activities act through; deleted at the end
    trust_id: Mapped[str | None] = mapped_column(String(64), default=None)
    #: ``migration`` (the one-shot path), ``transfer`` or ``deployment``
    type: Mapped[str] = mapped_column(String(32), default="migration", server_default="migration", index=True)
    #: transfers: ``replica`` or ``live_migration``
    scenario: Mapped[str | None] = mapped_column(String(32), default=None)
    clone_disks: Mapped[bool] = mapped_column(Boolean, default=True, server_default=true())
    #: deployments: the transfer they deploy, and the transfer execution that triggered them (auto_deploy)
    transfer_id: Mapped[str | None] = mapped_column(String(36), default=None, index=True)
    deployer_id: Mapped[str | None] = mapped_column(String(36), default=None)
    #: a ``live_migration`` transfer that a ``POST /migrations`` created: it *is* that migration (same
    #: id), shown by ``/migrations`` in the legacy shape (``api.live_migrations``), hidden from ``/replicas``
    from_migrations_api: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())

    executions: Mapped[list[Execution]] = relationship(
        back_populates="migration", order_by="Execution.number", lazy="selectin"
    )


class Execution(_Row, Base):
    __tablename__ = "executions"

    action_id: Mapped[str] = mapped_column(String(36), ForeignKey("migrations.id"), index=True)
    status: Mapped[str] = mapped_column(String(64), default="RUNNING")
    number: Mapped[int] = mapped_column(Integer, default=1)
    type: Mapped[str] = mapped_column(String(64), default="migration")
    #: the Temporal workflow running it (scheduled runs get a server-made id)
    workflow_id: Mapped[str | None] = mapped_column(String(255), default=None)

    migration: Mapped[Migration] = relationship(back_populates="executions")
    tasks: Mapped[list[Task]] = relationship(back_populates="execution", order_by="Task.index", lazy="selectin")


class Task(_Row, Base):
    __tablename__ = "tasks"

    execution_id: Mapped[str] = mapped_column(String(36), ForeignKey("executions.id"), index=True)
    instance: Mapped[str] = mapped_column(String(1024))
    host: Mapped[str | None] = mapped_column(String(255))
    process_id: Mapped[int | None] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(64), default="SCHEDULED")
    task_type: Mapped[str] = mapped_column(String(128))
    exception_details: Mapped[str | None] = mapped_column(Text)
    depends_on: Mapped[list[Any]] = mapped_column(JSON, default=list)
    index: Mapped[int] = mapped_column(Integer, default=0)
    on_error: Mapped[bool] = mapped_column(Boolean, default=False)

    execution: Mapped[Execution] = relationship(back_populates="tasks")
    events: Mapped[list[TaskEvent]] = relationship(order_by="TaskEvent.index", lazy="selectin")
    progress_updates: Mapped[list[TaskProgressUpdate]] = relationship(
        order_by="TaskProgressUpdate.index", lazy="selectin"
    )


class TaskEvent(_Row, Base):
    __tablename__ = "task_events"

    task_id: Mapped[str] = mapped_column(String(36), ForeignKey("tasks.id"), index=True)
    level: Mapped[str] = mapped_column(String(16), default="INFO")
    index: Mapped[int] = mapped_column(Integer, default=0)
    message: Mapped[str] = mapped_column(Text)


class TaskProgressUpdate(_Row, Base):
    __tablename__ = "task_progress_updates"

    task_id: Mapped[str] = mapped_column(String(36), ForeignKey("tasks.id"), index=True)
    index: Mapped[int] = mapped_column(Integer, default=0)
    current_step: Mapped[int] = mapped_column(BigInteger, default=0)
    total_steps: Mapped[int | None] = mapped_column(BigInteger)
    message: Mapped[str | None] = mapped_column(Text)


class TransferSchedule(_Row, Base):
    """A Coriolis transfer schedule; Temporal holds the schedule itself (``schedule_id``)."""

    __tablename__ = "transfer_schedules"

    transfer_id: Mapped[str] = mapped_column(String(36), ForeignKey("migrations.id"), index=True)
    project_id: Mapped[str] = mapped_column(String(255), index=True)
    schedule: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    expiration_date: Mapped[datetime | None] = mapped_column(DateTime, default=None)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    shutdown_instance: Mapped[bool] = mapped_column(Boolean, default=False)
    auto_deploy: Mapped[bool] = mapped_column(Boolean, default=False)


class ReplicaDisk(_Row, Base):
    """What one replica disk last received: kept here, not in Temporal history.

    ``digests`` is a digest map (``diskio.digest.encode_map``: its algorithm, then one digest per
    chunk). ``trusted`` is False from the moment an execution starts writing until it finishes:
    a replica left untrusted is fully re-synced by the next execution.
    """

    __tablename__ = "replica_disks"

    transfer_id: Mapped[str] = mapped_column(String(36), ForeignKey("migrations.id"), index=True)
    instance: Mapped[str] = mapped_column(String(1024))
    disk_id: Mapped[str] = mapped_column(String(255))
    path: Mapped[str | None] = mapped_column(Text)
    format: Mapped[str] = mapped_column(String(16), default="raw")
    size_bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    chunk_size: Mapped[int] = mapped_column(Integer, default=0)
    digests: Mapped[bytes | None] = mapped_column(LargeBinary, default=None)
    trusted: Mapped[bool] = mapped_column(Boolean, default=False)
    last_execution_id: Mapped[str | None] = mapped_column(String(36), default=None)
    #: the source's change-tracking marker (CBT changeId, qcow2 bitmap, EBS snapshot id) this
    #: replica was last synced from: the next execution asks the source what changed since it
    change_marker: Mapped[str | None] = mapped_column(Text, default=None)


class SourceHostSlot(Base):
    """One of the ``STERNA_MAX_TRANSFERS_PER_SOURCE_HOST`` transfer slots of a source host, while held.

    The primary key (host, slot) is the semaphore: taking a slot is an INSERT that only one
    worker can win, on SQLite and PostgreSQL alike. A holder renews ``expires_at`` while it
    copies; a dead holder's slot is taken over once it expires.
    """

    __tablename__ = "source_host_slots"

    source_host: Mapped[str] = mapped_column(String(512), primary_key=True)
    slot: Mapped[int] = mapped_column(Integer, primary_key=True)
    holder: Mapped[str] = mapped_column(String(512))
    expires_at: Mapped[datetime] = mapped_column(DateTime)
