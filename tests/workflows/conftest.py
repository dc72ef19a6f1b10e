"""Workers with fake activities on the time-skipping server."""

import uuid
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager

import pytest
from temporalio.client import WorkflowExecutionStatus
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from tests.fakes import FakeActivities
from tests.workflows.drive import STARTED
from worker import HEARTBEAT_THROTTLE, WORKFLOW_RUNNER
from workflows.campaign import CampaignWorkflow
from workflows.options import JOBS_QUEUE, TRAINING_QUEUE


@pytest.fixture
async def queue() -> str:
    return f"test-{uuid.uuid4()}"


@pytest.fixture
async def fakes() -> FakeActivities:
    fakes = FakeActivities()
    fakes.planning_may_finish.set()
    return fakes


@pytest.fixture(autouse=True)
async def terminate_leftovers() -> AsyncIterator[None]:
    yield
    while STARTED:
        handle = STARTED.pop()
        if (await handle.describe()).status == WorkflowExecutionStatus.RUNNING:
            await handle.terminate("test ended")


@asynccontextmanager
async def campaign_workers(
    env: WorkflowEnvironment, queue: str, fakes: FakeActivities, sticky: bool = True
) -> AsyncIterator[None]:
    """Workers for campaigns, training and jobs, running the fakes.

    Args:
        sticky: Cache workflows on the worker. Tests that restart workers turn it off: the
            time-skipping server keeps routing a workflow's tasks to the stopped worker's
            sticky queue instead of falling back to the normal one.
    """
    client = env.client
    async with (
        Worker(
            client,
            task_queue=queue,
            workflows=[CampaignWorkflow],
            activities=fakes.all(),
            activity_executor=ThreadPoolExecutor(max_workers=4),
            workflow_runner=WORKFLOW_RUNNER,
            **({} if sticky else {"max_cached_workflows": 0}),
        ),
        Worker(
            client,
            task_queue=TRAINING_QUEUE,
            activities=fakes.training(),
            max_heartbeat_throttle_interval=HEARTBEAT_THROTTLE,
        ),
        Worker(
            client,
            task_queue=JOBS_QUEUE,
            activities=fakes.jobs(),
            activity_executor=ThreadPoolExecutor(max_workers=4),
        ),
    ):
        yield


@pytest.fixture
async def workers(
    time_skipping_env: WorkflowEnvironment, queue: str, fakes: FakeActivities
) -> AsyncIterator[None]:
    async with campaign_workers(time_skipping_env, queue, fakes):
        yield
