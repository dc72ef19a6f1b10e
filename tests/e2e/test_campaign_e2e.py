"""End to end: the real dev server, real workers, real (tiny) TorchRec training.

The second test drives the campaign with the Temporal CLI only, as a service written in
another language would over gRPC: JSON in, JSON out.
"""

import asyncio
import json
import subprocess
import uuid
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from pathlib import Path

import pytest
from temporalio.client import WorkflowExecutionStatus, WorkflowHandle
from temporalio.testing import WorkflowEnvironment

import devserver
from contracts import ApproveInput, Budget, CampaignResult, DatasetRef, ModelSpec
from settings import Settings
from store import InsightsStore
from tests.factories import APPROVER, campaign_request
from worker import build_workers
from workflows.campaign import CampaignWorkflow
from workflows.options import BEST_METRIC, ORCHESTRATION_QUEUE, PHASE

pytestmark = pytest.mark.e2e

TINY = {
    "baseline": ModelSpec(epochs=1, batch_size=256),
    "dataset": DatasetRef(max_rows=4000),
    "budget": Budget(device_hours=1.0, max_parallel_trials=2, max_trials=4),
}
# Every phase of the protocol, as small as it gets: 2 seeds, 2 tuned trials.
WHOLE = TINY | {
    "budget": Budget(device_hours=1.0, max_parallel_trials=2),
    "seeds": 2,
    "exploitation_trials": 2,
}


@pytest.fixture
async def settings(tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path)


@pytest.fixture
async def workers(dev_env: WorkflowEnvironment, settings: Settings) -> AsyncIterator[None]:
    async with AsyncExitStack() as stack:
        for worker in build_workers(dev_env.client, settings):
            await stack.enter_async_context(worker)
        yield


async def wait_for_phase(handle: WorkflowHandle, phase: str, timeout_s: float = 60) -> None:
    for _ in range(int(timeout_s / 0.1)):
        if (await handle.query(CampaignWorkflow.status)).phase == phase:
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"never reached phase {phase}")


async def test_campaign_trains_for_real_and_stores_results(
    dev_env: WorkflowEnvironment, settings: Settings, workers: None
) -> None:
    handle = await dev_env.client.start_workflow(
        CampaignWorkflow.run,
        campaign_request(**WHOLE),
        id=f"e2e-{uuid.uuid4()}",
        task_queue=ORCHESTRATION_QUEUE,
    )
    await wait_for_phase(handle, "awaiting_approval")
    await handle.execute_update(CampaignWorkflow.approve, ApproveInput(approver=APPROVER))
    result: CampaignResult = await asyncio.wait_for(handle.result(), timeout=240)

    status = result.status
    trials = status.trials
    assert status.phase == "done" and status.protocol == "evidence"
    assert trials[0].trial_id == "baseline~r0"
    assert all(t.state in ("succeeded", "pruned") for t in trials)
    assert all(t.validation and t.test for t in trials if t.state == "succeeded")
    assert {"validation", "exploitation"} <= set(status.decisions)
    assert len(status.tuned) == 2 and status.ledger.phases["exploitation"].spent > 0
    assert status.proposal is not None and status.proposal.headline
    assert status.device_hours_spent == pytest.approx(sum(t.device_hours for t in trials))

    stored = InsightsStore(settings.database).trials(handle.id)
    assert sorted(r.spec.trial_id for r in stored) == sorted(t.trial_id for t in trials)

    attributes = (await handle.describe()).typed_search_attributes
    assert attributes.get(PHASE) == "done"
    if status.best_metric is not None:  # only a change that passed a gate leads
        assert attributes.get(BEST_METRIC) == pytest.approx(status.best_metric)


def temporal(address: str, *args: str) -> dict:
    """Run the Temporal CLI against ``address`` and parse its JSON output."""
    completed = subprocess.run(
        [str(devserver.binary("temporal")), *args, "--address", address, "--output", "json"],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return json.loads(completed.stdout) if completed.stdout.strip() else {}


async def test_a_non_python_client_starts_approves_and_completes_a_campaign(
    dev_env: WorkflowEnvironment, workers: None
) -> None:
    address = dev_env.client.service_client.config.target_host
    workflow_id = f"cli-{uuid.uuid4()}"
    request = campaign_request(**TINY).model_dump_json()
    await asyncio.to_thread(
        temporal, address, "workflow", "start", "--type", "CampaignWorkflow",
        "--task-queue", ORCHESTRATION_QUEUE, "--workflow-id", workflow_id, "--input", request,
    )  # fmt: skip
    await wait_for_phase(dev_env.client.get_workflow_handle(workflow_id), "awaiting_approval")
    approval = await asyncio.to_thread(
        temporal, address, "workflow", "update", "execute", "--workflow-id", workflow_id,
        "--name", "approve", "--input", json.dumps({"approver": APPROVER}),
    )  # fmt: skip
    assert APPROVER in json.dumps(approval)
    result = await asyncio.to_thread(
        temporal, address, "workflow", "result", "--workflow-id", workflow_id
    )
    assert result["status"] == "COMPLETED", result
    assert result["result"]["status"]["phase"] == "done"


async def test_a_malformed_request_fails_fast_naming_the_field(
    dev_env: WorkflowEnvironment, workers: None
) -> None:
    address = dev_env.client.service_client.config.target_host
    workflow_id = f"bad-{uuid.uuid4()}"
    await asyncio.to_thread(
        temporal, address, "workflow", "start", "--type", "CampaignWorkflow",
        "--task-queue", ORCHESTRATION_QUEUE, "--workflow-id", workflow_id,
        "--input", json.dumps({"approvers": ["alice"], "budget": {"device_hours": 0}}),
    )  # fmt: skip
    handle = dev_env.client.get_workflow_handle(workflow_id)
    for _ in range(100):
        description = await handle.describe()
        if description.status != WorkflowExecutionStatus.RUNNING:
            break
        await asyncio.sleep(0.1)
    assert description.status == WorkflowExecutionStatus.FAILED
    history = await handle.fetch_history()
    failed = [e for e in history.events if e.HasField("workflow_execution_failed_event_attributes")]
    message = failed[0].workflow_execution_failed_event_attributes.failure.message
    assert "budget.device_hours" in message
    # Failed once, not retried: one workflow task failed at most, none after the failure.
    task_failures = [
        e for e in history.events if e.HasField("workflow_task_failed_event_attributes")
    ]
    assert task_failures == []
