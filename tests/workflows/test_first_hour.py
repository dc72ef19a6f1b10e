"""What a new user runs into first: failed planning, stopping at any time, repeated approvals,
and the trial-slot limit across everything that wakes waiting trials."""

import asyncio
from collections.abc import Awaitable, Callable

import pytest
from temporalio.client import WorkflowFailureError, WorkflowHandle, WorkflowUpdateFailedError
from temporalio.testing import WorkflowEnvironment

from contracts import ApproveInput, Budget, CampaignResult, ControlInput, ExtendBudgetInput
from tests.factories import APPROVER
from tests.fakes import FakeActivities
from tests.workflows.conftest import campaign_workers
from tests.workflows.drive import start, start_approved, wait_for_phase
from workflows.campaign import CampaignWorkflow
from workflows.options import NEEDS_ATTENTION, PHASE


async def test_planning_that_cannot_succeed_fails_the_campaign_naming_the_field(
    time_skipping_env: WorkflowEnvironment, queue: str, fakes: FakeActivities, workers: None
) -> None:
    fakes.planning_error = (
        "BadDataError",
        "DatasetRef.path: /data/ml-100k does not exist; point path at the folder",
    )
    handle = await start(time_skipping_env, queue)

    with pytest.raises(WorkflowFailureError) as failed:
        await handle.result()

    assert "planning failed" in str(failed.value.cause)
    assert "DatasetRef.path" in str(failed.value.cause)
    status = await handle.query(CampaignWorkflow.status)
    assert status.phase == "failed" and "DatasetRef.path" in status.error
    assert "DatasetRef.path" in status.needs_attention
    attributes = (await handle.describe()).typed_search_attributes
    assert attributes.get(PHASE) == "failed" and attributes.get(NEEDS_ATTENTION) is True


async def test_stop_ends_a_campaign_stuck_in_planning(
    time_skipping_env: WorkflowEnvironment, queue: str, fakes: FakeActivities, workers: None
) -> None:
    fakes.planning_may_finish.clear()  # planning hangs, as a retrying activity would
    handle = await start(time_skipping_env, queue)
    await wait_for_phase(handle, "planning")

    await handle.signal(CampaignWorkflow.stop, ControlInput(by=APPROVER, reason="wrong data"))
    result: CampaignResult = await handle.result()

    assert result.status.phase == "stopped" and "wrong data" in result.status.stop_reason
    assert result.status.plan is None and not result.status.trials
    # Let the abandoned planning attempt end: the test server keeps time locked for an
    # activity still running under a closed workflow.
    fakes.planning_may_finish.set()


async def test_stop_ends_a_campaign_awaiting_approval(
    time_skipping_env: WorkflowEnvironment, queue: str, fakes: FakeActivities, workers: None
) -> None:
    handle = await start(time_skipping_env, queue)
    await wait_for_phase(handle, "awaiting_approval")

    await handle.signal(CampaignWorkflow.stop, ControlInput(by=APPROVER))
    result: CampaignResult = await handle.result()

    assert result.status.phase == "stopped" and not result.status.trials
    assert not fakes.trained


async def test_approving_again_with_other_hours_is_refused(
    time_skipping_env: WorkflowEnvironment, queue: str, fakes: FakeActivities, workers: None
) -> None:
    fakes.block_until_cancelled = True
    handle = await start(time_skipping_env, queue)
    await wait_for_phase(handle, "awaiting_approval")
    await handle.execute_update(
        CampaignWorkflow.approve, ApproveInput(approver=APPROVER, device_hours=5.0)
    )

    with pytest.raises(WorkflowUpdateFailedError) as refused:
        await handle.execute_update(
            CampaignWorkflow.approve, ApproveInput(approver=APPROVER, device_hours=9.0)
        )
    assert "already approved with 5" in str(refused.value.cause)
    assert "extend" in str(refused.value.cause)
    # The same hours again, or none, is a harmless repeat.
    again = await handle.execute_update(
        CampaignWorkflow.approve, ApproveInput(approver=APPROVER, device_hours=5.0)
    )
    assert again.device_hours == 5.0
    assert (await handle.query(CampaignWorkflow.status)).ledger.approved == 5.0
    await handle.signal(CampaignWorkflow.stop, ControlInput(by=APPROVER))
    await handle.result()


async def test_max_parallel_trials_holds_across_extension_pause_and_worker_restart(
    time_skipping_env: WorkflowEnvironment, queue: str, fakes: FakeActivities
) -> None:
    # Trials are estimated (and spend) one hour each; three hours are approved. The other
    # trials wait while the budget is spent, and the extension wakes all of them at once.
    fakes.hold_s = 0.3
    budget = Budget(device_hours=3.0, max_parallel_trials=2, max_trials=10)
    async with campaign_workers(time_skipping_env, queue, fakes, sticky=False):
        handle = await start_approved(time_skipping_env, queue, budget=budget)
        await until_true(lambda: budget_exhausted(handle), "the budget to run out")
        assert len(fakes.trained) == 3

        await handle.signal(CampaignWorkflow.pause, ControlInput(by=APPROVER))
        await handle.execute_update(
            CampaignWorkflow.extend_budget, ExtendBudgetInput(approver=APPROVER, device_hours=20.0)
        )
        await asyncio.sleep(1.0)
        assert len(fakes.trained) == 3, "a paused campaign launched trials"

        await handle.signal(CampaignWorkflow.resume, ControlInput(by=APPROVER))
        await until_true(lambda: trained_at_least(fakes, 5), "trials after resuming")
        # The workers go away with trials in flight; new ones take over (the trials retry).
    async with campaign_workers(time_skipping_env, queue, fakes, sticky=False):
        result: CampaignResult = await handle.result()

    assert result.status.phase == "done"
    assert fakes.max_in_flight <= 2, f"{fakes.max_in_flight} trials ran at once"
    assert len(result.status.trials) == 10  # max_trials
    assert all(t.state == "succeeded" for t in result.status.trials)


async def until_true(check: Callable[[], Awaitable[bool]], what: str) -> None:
    for _ in range(600):
        if await check():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


async def trained_at_least(fakes: FakeActivities, count: int) -> bool:
    return len(fakes.trained) >= count


async def budget_exhausted(handle: WorkflowHandle) -> bool:
    return (await handle.describe()).typed_search_attributes.get(NEEDS_ATTENTION) is True
