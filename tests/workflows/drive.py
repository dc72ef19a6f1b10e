"""Starting and steering campaigns in workflow tests."""

import asyncio
import uuid

from temporalio.client import WorkflowHandle
from temporalio.testing import WorkflowEnvironment

from contracts import ApproveInput
from tests.factories import APPROVER, campaign_request
from workflows.campaign import CampaignWorkflow

# Campaigns started by the current test; the `terminate_leftovers` fixture ends those still
# running, so that they do not schedule work on the shared training and jobs queues of the
# next test.
STARTED: list[WorkflowHandle] = []


async def start(env: WorkflowEnvironment, queue: str, **overrides: object) -> WorkflowHandle:
    handle = await env.client.start_workflow(
        CampaignWorkflow.run,
        campaign_request(**overrides),
        id=f"campaign-{uuid.uuid4()}",
        task_queue=queue,
    )
    STARTED.append(handle)
    return handle


async def wait_for_phase(handle: WorkflowHandle, phase: str) -> None:
    for _ in range(400):
        if (await handle.query(CampaignWorkflow.status)).phase == phase:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"never reached phase {phase}")


async def start_approved(
    env: WorkflowEnvironment, queue: str, **overrides: object
) -> WorkflowHandle:
    handle = await start(env, queue, **overrides)
    await wait_for_phase(handle, "awaiting_approval")
    await handle.execute_update(CampaignWorkflow.approve, ApproveInput(approver=APPROVER))
    return handle
