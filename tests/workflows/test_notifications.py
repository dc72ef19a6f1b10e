"""Slack notifications at the campaign's four moments (the activity faked by name; the real
one, the Slack app and a fake Web API are in tests/integrations/test_slack.py)."""

import asyncio

from temporalio.testing import WorkflowEnvironment

from contracts import (
    ApproveInput,
    Budget,
    CampaignResult,
    ControlInput,
    Notification,
    ResolveTrialInput,
)
from tests.factories import APPROVER
from tests.fakes import FakeActivities
from tests.workflows.drive import start, wait_for_phase
from workflows.campaign import CampaignWorkflow


async def notified(fakes: FakeActivities, kind: str) -> Notification:
    for _ in range(400):
        if found := [n for n in fakes.notifications if n.kind == kind]:
            return found[0]
        await asyncio.sleep(0.05)
    raise AssertionError(f"no {kind}; got {[n.kind for n in fakes.notifications]}")


async def test_approval_escalation_exhausted_budget_and_proposal_are_notified(
    time_skipping_env: WorkflowEnvironment, queue: str, fakes: FakeActivities, workers: None
) -> None:
    fakes.fail["v-wider-embeddings"] = "segmentation fault in the id hasher"
    fakes.fail_type["v-wider-embeddings"] = "HasherCrash"  # no runbook entry: escalates
    budget = Budget(device_hours=3.0, max_parallel_trials=1)
    handle = await start(time_skipping_env, queue, budget=budget)
    await wait_for_phase(handle, "awaiting_approval")
    asked = await notified(fakes, "plan_awaiting_approval")
    assert asked.campaign_id == handle.id
    assert asked.hypotheses and asked.hypotheses[0].startswith("wider-embeddings: ")
    assert asked.budget_device_hours == 3.0 and asked.estimated_device_hours > 0
    assert asked.preflight is not None and asked.preflight.passed
    await handle.execute_update(CampaignWorkflow.approve, ApproveInput(approver=APPROVER))

    # Answered here rather than left to time out: these tests must not lean on time skipping.
    escalated = (await notified(fakes, "trial_escalated")).escalation
    assert escalated is not None and escalated.trial_id == "v-wider-embeddings~r0"
    assert escalated.error_type == "HasherCrash"
    await handle.execute_update(
        CampaignWorkflow.resolve_trial,
        ResolveTrialInput(approver=APPROVER, trial_id=escalated.trial_id, action="skip"),
    )
    exhausted = await notified(fakes, "budget_exhausted")
    # The button adds the approved hours again.
    assert exhausted.extend_by_device_hours == 3.0 and exhausted.ledger is not None
    await handle.signal(CampaignWorkflow.stop, ControlInput(by=APPROVER, reason="enough"))
    result: CampaignResult = await handle.result()

    kinds = [n.kind for n in fakes.notifications]
    # Trials waiting together for an extension post it once.
    assert kinds == [
        "plan_awaiting_approval",
        "trial_escalated",
        "budget_exhausted",
        "launch_proposal",
    ], kinds
    proposal = fakes.notifications[-1].proposal
    assert proposal is not None and proposal == result.status.proposal


async def test_a_failing_notification_neither_fails_nor_stops_the_campaign(
    time_skipping_env: WorkflowEnvironment, queue: str, fakes: FakeActivities, workers: None
) -> None:
    fakes.notify_error = "Slack answered 500"
    budget = Budget(device_hours=100.0, max_parallel_trials=2)
    handle = await start(time_skipping_env, queue, budget=budget, max_hypotheses=1, seeds=2)
    await wait_for_phase(handle, "awaiting_approval")
    await handle.execute_update(CampaignWorkflow.approve, ApproveInput(approver=APPROVER))

    result: CampaignResult = await handle.result()

    assert result.status.phase == "done" and result.status.proposal is not None
    assert fakes.notifications == []
