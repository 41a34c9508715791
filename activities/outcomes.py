"""Light activities the workflows use to record outcomes they alone know (errors, cancels)."""

from __future__ import annotations

import asyncio

from temporalio import activity

from activities import names
from activities.services import Services
from workflows.types import FINAL_STATUSES, MigrationStatusUpdate, Status, TaskType, TaskUpdate


class RecordActivities:
    def __init__(self, services: Services) -> None:
        self.services = services

    @activity.defn(name=names.RECORD_TASK)
    async def record_task(self, inp: TaskUpdate) -> None:
        store = self.services.store
        t = inp.task
        await asyncio.to_thread(
            store.set_task_status, t.migration_id, t.instance, t.task_type, inp.status,
            exception_details=inp.message, execution_id=t.execution_id,
        )
        if inp.message:
            task_id = await asyncio.to_thread(store.task_id, t.migration_id, t.instance, t.task_type,
                                              t.execution_id)
            level = "ERROR" if inp.status == Status.ERROR else "WARNING"
            await asyncio.to_thread(store.add_event, task_id, inp.message, level)

    @activity.defn(name=names.RECORD_UNFINISHED_TASKS)
    async def record_unfinished(self, inp: TaskUpdate) -> None:
        """Give every task of the instance that never ran a final status (cleanup excluded)."""
        store = self.services.store
        t = inp.task
        tasks = await asyncio.to_thread(store.tasks_of, t.migration_id, t.instance, t.execution_id)
        for task in tasks:
            # on_error tasks (the cleanups) record their own fate.
            if task.task_type == TaskType.CLEANUP or task.on_error or task.status in FINAL_STATUSES:
                continue
            if task.status in (Status.SCHEDULED, Status.PENDING, Status.RUNNING):
                await asyncio.to_thread(
                    store.set_task_status, t.migration_id, t.instance, task.task_type,
                    inp.status if task.status == Status.RUNNING else Status.UNSCHEDULED,
                    execution_id=t.execution_id,
                )

    @activity.defn(name=names.RECORD_MIGRATION_STATUS)
    async def record_migration_status(self, inp: MigrationStatusUpdate) -> None:
        activity.logger.info("migration %s -> %s", inp.migration_id, inp.status)
        await asyncio.to_thread(self.services.store.set_migration_status, inp.migration_id, inp.status)
