"""Workflows for the test of ``workflows.shared.gather_deciding``: a parent of one child, its children on a
task queue of their own, so that a test can stop the parents' worker while a child goes on."""

from __future__ import annotations

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from workflows.shared import gather_deciding, gather_instances


@workflow.defn
class Instance:
    """Ends when told to, or cancelled."""

    def __init__(self) -> None:
        self._told = False

    @workflow.signal
    def finish(self) -> None:
        self._told = True

    @workflow.run
    async def run(self) -> str:
        await workflow.wait_condition(lambda: self._told)
        return "done"


def child_id() -> str:
    return workflow.info().workflow_id + "-instance"


@workflow.defn
class Deciding:
    @workflow.run
    async def run(self, queue: str) -> str:
        return (await gather_deciding([workflow.start_child_workflow(Instance.run, id=child_id(),
                                                                     task_queue=queue)])).value


@workflow.defn
class Gathering:
    """What deployments did before ``INSTANCES_DECIDE_CANCEL``."""

    @workflow.run
    async def run(self, queue: str) -> str:
        return (await gather_instances([workflow.execute_child_workflow(Instance.run, id=child_id(),
                                                                        task_queue=queue)])).value
