"""Runbooks, escalation and the preflight checklist in CampaignWorkflow (time-skipping server,
the shipped runbooks behind the real diagnosis activity, the rest faked by name)."""

import asyncio
from collections.abc import Callable

import pytest
from temporalio.client import WorkflowHandle, WorkflowUpdateFailedError
from temporalio.testing import WorkflowEnvironment

from contracts import (
    ApproveInput,
    CampaignResult,
    CampaignStatus,
    ControlInput,
    PreflightItem,
    ResolveTrialInput,
)
from tests.factories import APPROVER
from tests.fakes import FakeActivities
from tests.workflows.conftest import campaign_workers
from tests.workflows.drive import start, start_approved, wait_for_phase
from workflows.campaign import CampaignWorkflow
from workflows.options import TRIALS_NEEDING_ATTENTION

NAN = "training diverged: loss is nan at step 3 (not finite); lower dense_lr or sparse_lr"


async def status_when(
    handle: WorkflowHandle, ready: Callable[[CampaignStatus], bool]
) -> CampaignStatus:
    for _ in range(600):
        status: CampaignStatus = await handle.query(CampaignWorkflow.status)
        if ready(status):
            return status
        await asyncio.sleep(0.05)
    raise AssertionError(f"never ready; last status: {status.message}")


async def test_a_diverged_trial_is_remedied_in_a_linked_trial_that_never_stands_for_its_hypothesis(
    time_skipping_env: WorkflowEnvironment, queue: str, fakes: FakeActivities, workers: None
) -> None:
    fakes.diverge["v-wider-over-arch"] = NAN
    handle = await start_approved(time_skipping_env, queue)
    result: CampaignResult = await handle.result()

    status = result.status
    [remedy] = status.remedies
    assert (remedy.trial_id, remedy.pattern_id, remedy.remedy.kind, remedy.state) == (
        "v-wider-over-arch~r0",
        "nan-loss",
        "lower_lr",
        "succeeded",
    )
    trials = {t.trial_id: t for t in status.trials}
    original, linked = trials["v-wider-over-arch~r0"], trials[remedy.run_trial_id]
    assert original.state == "diverged"  # the hypothesis as written did diverge
    assert linked.state == "succeeded" and linked.remedy_of == original.trial_id
    assert linked.arm == "v-wider-over-arch~r1"
    ran = fakes.specs[remedy.run_trial_id].model
    assert ran.dense_lr == pytest.approx(fakes.specs[original.trial_id].model.dense_lr * 0.3)
    # No gate ever paired the remedy's run with the hypothesis's arm.
    compared = {c.hypothesis_id for d in status.decisions.values() for c in d.comparisons}
    assert not any("~" in arm for arm in compared)
    assert status.screen is not None and "v-wider-over-arch" not in status.screen.promoted
    # Charged like any trial; recorded with what it remedied, and the remedy's outcome kept.
    assert status.ledger.spent == pytest.approx(sum(t.device_hours for t in status.trials))
    stored = {r.spec.trial_id: r for r in fakes.recorded}
    assert stored[linked.trial_id].remedy == "nan-loss: lower_lr"
    assert [(r.campaign_id, r.attempt.state) for r in fakes.remedies] == [(handle.id, "succeeded")]
    assert status.escalations == []


async def test_an_unmatched_failure_escalates_one_trial_while_the_others_finish(
    time_skipping_env: WorkflowEnvironment, queue: str, fakes: FakeActivities, workers: None
) -> None:
    fakes.fail["v-wider-embeddings"] = "segmentation fault in the id hasher"
    fakes.fail_type["v-wider-embeddings"] = "HasherCrash"
    handle = await start_approved(time_skipping_env, queue)
    stuck = "v-wider-embeddings~r0"

    status = await status_when(
        handle,
        lambda s: (
            bool(s.open_escalations)
            and all(t.state != "running" for t in s.trials if t.trial_id != stuck)
            and len(s.trials) == 7
        ),
    )
    [escalation] = status.open_escalations
    assert escalation.trial_id == stuck and escalation.error_type == "HasherCrash"
    assert "no runbook entry matches HasherCrash" in escalation.diagnosis.why_escalate
    assert "no research agent is configured" in escalation.diagnosis.why_escalate
    # Only that trial waits: the rest of the screen finished.
    others = [t for t in status.trials if t.trial_id != stuck]
    assert {t.state for t in others} == {"succeeded"}
    assert status.phase == "validation"
    description = await handle.describe()
    assert description.typed_search_attributes.get(TRIALS_NEEDING_ATTENTION) == [stuck]

    # Answers are checked before they touch the history.
    bad = [
        (ResolveTrialInput(approver=APPROVER, trial_id="v-nope~r0", action="skip"), stuck),
        (
            ResolveTrialInput(
                approver=APPROVER, trial_id=stuck, action="retry", changes={"batch_size": 0}
            ),
            "changes: batch_size",
        ),
        (ResolveTrialInput(approver="mallory", trial_id=stuck, action="skip"), "mallory"),
    ]
    for answer, named in bad:
        with pytest.raises(WorkflowUpdateFailedError) as refused:
            await handle.execute_update(CampaignWorkflow.resolve_trial, answer)
        assert named in str(refused.value.cause)

    answered = await handle.execute_update(
        CampaignWorkflow.resolve_trial,
        ResolveTrialInput(
            approver=APPROVER,
            trial_id=stuck,
            action="retry",
            changes={"batch_size": 256},
            comment="the hasher overflows above 256",
        ),
    )
    assert answered.resolution is not None and answered.resolution.action == "retry"
    result: CampaignResult = await handle.result()

    trials = {t.trial_id: t for t in result.status.trials}
    assert trials[stuck].state == "failed"
    [retry] = result.status.remedies
    assert (retry.pattern_id, retry.remedy.kind, retry.state) == (
        "engineer",
        "set_fields",
        "succeeded",
    )
    assert trials[retry.run_trial_id].remedy_of == stuck
    assert fakes.specs[retry.run_trial_id].model.batch_size == 256
    assert result.status.open_escalations == []


async def test_an_engineer_may_stop_the_campaign_from_an_escalation(
    dev_env: WorkflowEnvironment, queue: str, fakes: FakeActivities
) -> None:
    # The dev server, not the time-skipping one: stopping cancels the trials in flight, and
    # the time-skipping server now and then rejects the cancel of one that has just ended
    # (ACTIVITY_UNKNOWN) and then loses the update that was in the same workflow task.
    fakes.fail["baseline"] = "ModelSpec.table_rows: features ['x'] are not in the dataset"
    async with campaign_workers(dev_env, queue, fakes):
        handle = await start_approved(dev_env, queue)
        await status_when(handle, lambda s: bool(s.open_escalations))

        await handle.execute_update(
            CampaignWorkflow.resolve_trial,
            ResolveTrialInput(approver=APPROVER, trial_id="baseline~r0", action="stop"),
        )
        result: CampaignResult = await handle.result()

    assert result.status.phase == "stopped"
    assert result.status.escalations[0].diagnosis.pattern_id == "bad-spec"


async def test_a_failing_preflight_blocks_approval_until_overridden_with_a_reason(
    time_skipping_env: WorkflowEnvironment, queue: str, fakes: FakeActivities, workers: None
) -> None:
    fakes.preflight_failures = [
        PreflightItem(
            check="data",
            ok=False,
            detail="Criteo path /data/day_0 does not exist",
            fix="restore the file or fix DatasetRef.path",
        )
    ]
    handle = await start(time_skipping_env, queue)
    await wait_for_phase(handle, "awaiting_approval")
    status: CampaignStatus = await handle.query(CampaignWorkflow.status)
    assert status.preflight is not None and not status.preflight.passed
    assert "preflight failed: data: Criteo path /data/day_0 does not exist" in (
        status.needs_attention
    )

    with pytest.raises(WorkflowUpdateFailedError) as refused:
        await handle.execute_update(CampaignWorkflow.approve, ApproveInput(approver=APPROVER))
    assert "--override-preflight" in str(refused.value.cause)
    assert (await handle.query(CampaignWorkflow.status)).approval is None

    approval = await handle.execute_update(
        CampaignWorkflow.approve,
        ApproveInput(approver=APPROVER, override_preflight="the data lands tonight"),
    )
    assert approval.preflight_override == "the data lands tonight"
    result: CampaignResult = await handle.result()
    assert result.status.phase == "done"


async def test_approving_the_hours_a_failed_cost_check_asks_for_meets_it(
    time_skipping_env: WorkflowEnvironment, queue: str, fakes: FakeActivities, workers: None
) -> None:
    fakes.preflight_failures = [PreflightItem(check="cost", ok=False, detail="over budget")]
    handle = await start(time_skipping_env, queue)
    await wait_for_phase(handle, "awaiting_approval")
    plan = (await handle.query(CampaignWorkflow.status)).plan
    assert plan is not None and plan.estimated_device_hours > 0

    for hours in (None, 0.5 * plan.estimated_device_hours):  # the plan does not fit these
        with pytest.raises(WorkflowUpdateFailedError) as refused:
            await handle.execute_update(
                CampaignWorkflow.approve, ApproveInput(approver=APPROVER, device_hours=hours)
            )
        assert "cost: over budget" in str(refused.value.cause)
    hours = 2 * plan.estimated_device_hours_high
    approval = await handle.execute_update(
        CampaignWorkflow.approve, ApproveInput(approver=APPROVER, device_hours=hours)
    )
    assert approval.preflight_override == "" and approval.device_hours == hours
    result: CampaignResult = await handle.result()
    assert result.status.phase == "done"


async def test_a_fixed_problem_passes_the_preflight_checked_again(
    time_skipping_env: WorkflowEnvironment, queue: str, fakes: FakeActivities, workers: None
) -> None:
    fakes.preflight_failures = [PreflightItem(check="memory", ok=False, detail="needs 40 GiB")]
    handle = await start(time_skipping_env, queue)
    await wait_for_phase(handle, "awaiting_approval")

    fakes.preflight_failures = []  # e.g. the engineer moved the campaign to a bigger host
    report = await handle.execute_update(CampaignWorkflow.recheck_preflight, ControlInput())
    assert report.passed and fakes.preflights == 2
    approval = await handle.execute_update(
        CampaignWorkflow.approve, ApproveInput(approver=APPROVER)
    )
    assert approval.preflight_override == ""
    result: CampaignResult = await handle.result()
    assert result.status.phase == "done"
