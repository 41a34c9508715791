"""One Temporal dev server per module for the workflow-branch tests (``stubs``), the binary the stack uses."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

from devstack.launcher import temporal_binary
from workflows import search


@pytest.fixture(scope="module")
async def temporal() -> AsyncIterator[WorkflowEnvironment]:
    # The time-skipping test server is a download; the dev server is installed with the project.
    # Sterna's search attributes, as the stack registers them: a migration's workflows upsert MigrationState.
    env = await WorkflowEnvironment.start_local(data_converter=pydantic_data_converter,
                                                dev_server_existing_path=temporal_binary(),
                                                search_attributes=search.ALL)
    async with env:
        yield env
