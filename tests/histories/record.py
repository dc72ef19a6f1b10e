"""Record a history the replay test checks: `python -m tests.histories.record NAME`.

After a workflow change that alters its commands (behind `workflow.patched`), record a new
`campaign_vN.json` and keep the old ones: every committed history must keep replaying.
Writes:
    NAME.json: a full campaign (plan, approval, validation and combination trials).
    incompatible.json: the same history with one scheduled activity renamed, which no
        version of CampaignWorkflow produces: the replay test's negative control.
"""

import asyncio
import json
import sys
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

import devserver
from client import client_options
from contracts import ApproveInput
from tests.factories import APPROVER, campaign_request
from tests.fakes import FakeActivities
from worker import WORKFLOW_RUNNER, ensure_search_attributes
from workflows.campaign import CampaignWorkflow
from workflows.options import TRAINING_QUEUE

HERE = Path(__file__).parent


async def record(name: str) -> None:
    env = await WorkflowEnvironment.start_time_skipping(
        test_server_existing_path=str(devserver.binary("temporal-test-server")),
        **client_options(),
    )
    await ensure_search_attributes(env.client, env.client.namespace)
    fakes = FakeActivities()
    fakes.planning_may_finish.set()
    # One diverged hypothesis, so the history holds a diagnosis and a remedy's linked trial.
    fakes.diverge["v-wider-over-arch"] = "training diverged: loss is nan at step 3 (not finite)"
    queue = f"record-{uuid.uuid4()}"
    async with (
        Worker(
            env.client,
            task_queue=queue,
            workflows=[CampaignWorkflow],
            activities=fakes.all(),
            activity_executor=ThreadPoolExecutor(4),
            workflow_runner=WORKFLOW_RUNNER,
        ),
        Worker(env.client, task_queue=TRAINING_QUEUE, activities=fakes.training()),
    ):
        handle = await env.client.start_workflow(
            CampaignWorkflow.run, campaign_request(), id="campaign-recorded", task_queue=queue
        )
        while (await handle.query(CampaignWorkflow.status)).phase != "awaiting_approval":
            await asyncio.sleep(0.05)
        await handle.execute_update(CampaignWorkflow.approve, ApproveInput(approver=APPROVER))
        await handle.result()
        history = json.loads((await handle.fetch_history()).to_json())
    await env.shutdown()

    (HERE / f"{name}.json").write_text(json.dumps(history, indent=1) + "\n")
    for event in history["events"]:
        scheduled = event.get("activityTaskScheduledEventAttributes")
        if scheduled and scheduled["activityType"]["name"] == "train_trial":
            scheduled["activityType"]["name"] = "train_trial_v0"
            break
    (HERE / "incompatible.json").write_text(json.dumps(history, indent=1) + "\n")


if __name__ == "__main__":
    asyncio.run(record(sys.argv[1]))
