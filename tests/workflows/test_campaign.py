"""CampaignWorkflow on the time-skipping server, with activities mocked by name."""

import asyncio
import uuid
from datetime import timedelta

import optuna
import pytest
from temporalio.client import WorkflowFailureError, WorkflowUpdateFailedError
from temporalio.testing import WorkflowEnvironment

from contracts import (
    ApproveInput,
    Budget,
    CampaignResult,
    ControlInput,
)
from tests.factories import APPROVER
from tests.fakes import FakeActivities
from tests.workflows.drive import start, start_approved, wait_for_phase
from workflows.campaign import CampaignWorkflow


async def test_campaign_approved_after_a_week_proposes_the_confirmed_combination(
    time_skipping_env: WorkflowEnvironment, queue: str, fakes: FakeActivities, workers: None
) -> None:
    handle = await start(time_skipping_env, queue)
    await wait_for_phase(handle, "awaiting_approval")
    await time_skipping_env.sleep(timedelta(days=7))
    status = await handle.query(CampaignWorkflow.status)
    assert status.phase == "awaiting_approval" and not status.trials

    approval = await handle.execute_update(
        CampaignWorkflow.approve, ApproveInput(approver=APPROVER)
    )
    result: CampaignResult = await handle.result()

    assert approval.approver == APPROVER
    status = result.status
    assert status.phase == "done" and status.protocol == "evidence"
    ids = [t.trial_id for t in status.trials]
    # Screen 7, gate 4 arms x 3 seeds, 1 merge x 3, 6 tuned + the best x 3, confirm 2 x 3.
    assert ids[0] == "baseline~r0" and len(ids) == len(set(ids)) == 7 + 12 + 3 + 9 + 6
    assert status.screen is not None
    assert status.screen.promoted == [
        "v-wider-embeddings",
        "v-wider-over-arch",
        "v-deeper-over-arch",
    ]
    assert status.decisions["validation"].passed == ["v-wider-embeddings", "v-wider-over-arch"]
    assert status.decisions["combination"].passed == ["c-wider-embeddings+wider-over-arch"]
    assert status.decisions["exploitation"].passed == []  # tuned moves are worse here
    assert [a.verdict for a in status.additivity] == ["synergy"]  # 0.04 vs 0.01 + 0.02
    proposal = status.proposal
    assert proposal is not None and proposal.verdict == "launch"
    assert proposal.candidate == "c-wider-embeddings+wider-over-arch"
    assert proposal.changes == {"embedding_dim": 32, "over_hidden": [128, 64]}
    assert proposal.confirmation is not None and proposal.confirmation.seeds == [1001, 1002, 1003]
    assert status.decisions["confirmation"].split == "test"
    assert proposal.headline.startswith("launch c-wider-embeddings+wider-over-arch: test NE")
    assert proposal.risks is not None and proposal.risks.embedding_ratio == pytest.approx(2.0, 0.1)
    assert result.improvement == pytest.approx((0.91 - 0.87) / 0.91, abs=0.002)
    assert result.best_model is not None and result.best_model.embedding_dim == 32
    assert status.best_trial_id == "c-wider-embeddings+wider-over-arch"
    assert status.device_hours_spent == pytest.approx(37.0)
    assert proposal.device_hours == {
        "validation": 19.0,
        "combination": 3.0,
        "exploitation": 9.0,
        "confirmation": 6.0,
    }
    assert sorted(r.spec.trial_id for r in fakes.recorded) == sorted(ids)
    assert (await handle.describe()).typed_search_attributes is not None


async def test_a_task_where_nothing_helps_ends_with_no_launchable_improvement(
    time_skipping_env: WorkflowEnvironment, queue: str, fakes: FakeActivities, workers: None
) -> None:
    fakes.ne = {}  # every arm, tuned ones included, has the baseline's mean NE
    handle = await start_approved(time_skipping_env, queue)
    result: CampaignResult = await handle.result()

    status = result.status
    proposal = status.proposal
    assert proposal is not None and proposal.verdict == "no launchable improvement"
    assert proposal.headline.startswith("no launchable improvement: no change beat seed noise")
    assert status.decisions["validation"].passed == []
    assert "confirmation" not in status.decisions
    assert not any(t.phase == "confirmation" for t in status.trials)
    assert "merging needs two" in status.phase_notes["combination"]
    assert result.best_model is None and result.improvement is None
    assert status.best_metric is None  # no single-seed "best" is headlined
    assert len(proposal.learned) >= 3


async def test_only_listed_approvers_may_approve_and_repeats_are_idempotent(
    time_skipping_env: WorkflowEnvironment, queue: str, workers: None
) -> None:
    handle = await start(time_skipping_env, queue)
    await wait_for_phase(handle, "awaiting_approval")

    with pytest.raises(WorkflowUpdateFailedError) as rejected:
        await handle.execute_update(CampaignWorkflow.approve, ApproveInput(approver="mallory"))
    assert "mallory" in str(rejected.value.cause) and APPROVER in str(rejected.value.cause)

    first = await handle.execute_update(CampaignWorkflow.approve, ApproveInput(approver=APPROVER))
    again = await handle.execute_update(
        CampaignWorkflow.approve, ApproveInput(approver="bob@example.com")
    )
    assert again == first
    await handle.result()


async def test_pause_holds_new_trials_until_resume(
    time_skipping_env: WorkflowEnvironment, queue: str, fakes: FakeActivities, workers: None
) -> None:
    handle = await start(time_skipping_env, queue)
    await wait_for_phase(handle, "awaiting_approval")
    await handle.signal(CampaignWorkflow.pause, ControlInput(by=APPROVER, reason="holiday"))
    await handle.execute_update(CampaignWorkflow.approve, ApproveInput(approver=APPROVER))
    await time_skipping_env.sleep(timedelta(days=3))

    status = await handle.query(CampaignWorkflow.status)
    assert status.paused and status.phase == "validation"
    assert fakes.trained == [] and status.trials == []

    await handle.signal(CampaignWorkflow.resume, ControlInput(by=APPROVER))
    result: CampaignResult = await handle.result()
    assert result.status.phase == "done" and len(fakes.trained) == 37


async def test_stop_cancels_running_trials_and_reports(
    time_skipping_env: WorkflowEnvironment, queue: str, fakes: FakeActivities, workers: None
) -> None:
    fakes.block_until_cancelled = True
    handle = await start(time_skipping_env, queue)
    await wait_for_phase(handle, "awaiting_approval")
    await handle.execute_update(CampaignWorkflow.approve, ApproveInput(approver=APPROVER))
    while len(fakes.trained) < 2:
        await asyncio.sleep(0.05)

    await handle.signal(CampaignWorkflow.stop, ControlInput(by=APPROVER, reason="enough"))
    # Poll instead of awaiting the result at once: awaiting it lets the server skip time past
    # the running trials' heartbeat timeout, which is not what this test is about.
    await wait_for_phase(handle, "stopped")
    result: CampaignResult = await handle.result()

    assert result.status.phase == "stopped"
    assert [t.state for t in result.status.trials] == ["cancelled", "cancelled"]
    assert len(fakes.trained) == 2  # nothing launched after the stop
    proposal = result.status.proposal
    assert proposal is not None and proposal.verdict == "no launchable improvement"
    assert "stopped before any change was confirmed" in proposal.headline


async def test_failed_and_diverged_trials_are_recorded_never_ranked_and_the_campaign_goes_on(
    time_skipping_env: WorkflowEnvironment, queue: str, fakes: FakeActivities, workers: None
) -> None:
    fakes.fail["v-wider-embeddings"] = "ModelSpec.embedding_dim: not a multiple of 4"
    fakes.diverge["v-wider-over-arch"] = "training diverged: loss is nan at step 12"
    handle = await start(time_skipping_env, queue)
    await wait_for_phase(handle, "awaiting_approval")
    await handle.execute_update(CampaignWorkflow.approve, ApproveInput(approver=APPROVER))
    result: CampaignResult = await handle.result()

    trials = {t.trial_id: t for t in result.status.trials}
    assert trials["v-wider-embeddings~r0"].state == "failed"
    assert trials["v-wider-embeddings~r0"].error_type == "BadSpecError"
    assert trials["v-wider-over-arch~r0"].state == "diverged"
    assert "nan" in trials["v-wider-over-arch~r0"].error
    assert trials["v-wider-over-arch~r0"].device_hours == pytest.approx(1.0)  # it is charged
    # Both improvers are out at the screen, so nothing passes and nothing is combined.
    screen = result.status.screen
    assert screen is not None and "v-wider-embeddings" not in screen.promoted
    assert result.status.decisions["validation"].passed == []
    assert "merging needs two" in result.status.phase_notes["combination"]
    stored = {r.spec.trial_id: r.result for r in fakes.recorded}
    assert stored["v-wider-over-arch~r0"] is not None
    assert stored["v-wider-over-arch~r0"].state == "diverged"


async def test_budget_guardrail_skips_trials_that_would_exceed_it(
    time_skipping_env: WorkflowEnvironment, queue: str, fakes: FakeActivities, workers: None
) -> None:
    # Each trial is estimated at one hour; three hours are approved, one trial at a time.
    handle = await start(
        time_skipping_env, queue, budget=Budget(device_hours=3.0, max_parallel_trials=1)
    )
    await wait_for_phase(handle, "awaiting_approval")
    await handle.execute_update(CampaignWorkflow.approve, ApproveInput(approver=APPROVER))
    result: CampaignResult = await handle.result()

    assert len(fakes.trained) == 3
    assert result.status.device_hours_spent <= 3.0


async def test_approval_before_the_plan_is_ready_is_rejected(
    time_skipping_env: WorkflowEnvironment, queue: str, fakes: FakeActivities, workers: None
) -> None:
    fakes.planning_may_finish.clear()
    handle = await start(time_skipping_env, queue)
    with pytest.raises(WorkflowUpdateFailedError) as rejected:
        await handle.execute_update(CampaignWorkflow.approve, ApproveInput(approver=APPROVER))
    assert "no plan is pending" in str(rejected.value.cause)
    # End cleanly: the test server keeps time locked for an activity whose workflow was
    # terminated under it, which would stall every later test's simulated time.
    fakes.planning_may_finish.set()
    await wait_for_phase(handle, "awaiting_approval")
    await handle.signal(CampaignWorkflow.stop, ControlInput(by=APPROVER))
    await handle.result()


async def test_malformed_request_fails_the_workflow_naming_the_field(
    time_skipping_env: WorkflowEnvironment, queue: str, workers: None
) -> None:
    handle = await time_skipping_env.client.start_workflow(
        "CampaignWorkflow",
        {"approvers": ["alice"], "budget": {"device_hours": -1}},
        id=f"campaign-{uuid.uuid4()}",
        task_queue=queue,
    )
    with pytest.raises(WorkflowFailureError) as failed:
        await handle.result()
    assert "budget.device_hours" in str(failed.value.cause)


async def test_pruned_tuned_trials_are_charged_and_told_to_the_study(
    time_skipping_env: WorkflowEnvironment, queue: str, fakes: FakeActivities, workers: None
) -> None:
    fakes.prune = {0, 1}  # the first two Optuna trials stop after one epoch, at half cost
    handle = await start_approved(time_skipping_env, queue)
    result: CampaignResult = await handle.result()

    status = result.status
    tuned = {t.arm: t for t in status.trials if t.trial_id.endswith("~x")}
    assert tuned["x0"].state == tuned["x1"].state == "pruned"
    assert tuned["x0"].device_hours == pytest.approx(0.5)
    assert status.ledger.phases["exploitation"].spent == pytest.approx(2 * 0.5 + 4 + 3)
    study = optuna.load_study(study_name=f"{handle.id}/exploitation", storage=fakes.search_url)
    states = {t.number: t.state for t in study.trials}
    assert states[0] == states[1] == optuna.trial.TrialState.PRUNED
    assert sorted(states) == sorted(int(arm[1:]) for arm in status.tuned)
    assert all(state.is_finished() for state in states.values())
    # A pruned move is never the one re-run on the gate seeds.
    assert status.decisions["exploitation"].comparisons[0].hypothesis_id not in ("x0", "x1")
