"""Hibernate-and-wake, the budget guardrails and continue-as-new, in simulated weeks."""

import asyncio
import threading
from datetime import timedelta

import pytest
from temporalio.client import (
    WorkflowFailureError,
    WorkflowHandle,
    WorkflowUpdateFailedError,
)
from temporalio.testing import WorkflowEnvironment

from contracts import (
    ApproveInput,
    Budget,
    CampaignResult,
    CampaignStatus,
    ControlInput,
    ExtendBudgetInput,
    JobFinishedInput,
    JobStatus,
    TrialResult,
)
from runbooks import load_runbook
from tests.factories import APPROVER
from tests.fakes import FakeActivities
from tests.workflows.drive import start, start_approved, wait_for_phase
from workflows import policy
from workflows.campaign import CampaignWorkflow
from workflows.options import NEEDS_ATTENTION

DAY = timedelta(days=1)


async def launched_jobs(fakes: FakeActivities, count: int) -> None:
    for _ in range(400):
        if len(fakes.launched) >= count:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"{len(fakes.launched)} jobs launched, expected {count}")


async def finish_job(handle: WorkflowHandle, fakes: FakeActivities, index: int) -> None:
    """Report job ``index`` as done, as the job's own process would (by signal)."""
    job = fakes.launched[index]
    await handle.signal(
        CampaignWorkflow.job_finished,
        JobFinishedInput(
            trial_id=job.trial_id, job_id=job.job_id, result=fakes.result(handle.id, job.trial_id)
        ),
    )


async def test_days_long_jobs_after_a_week_long_approval_complete_in_seconds(
    time_skipping_env: WorkflowEnvironment, queue: str, fakes: FakeActivities, workers: None
) -> None:
    env = time_skipping_env
    budget = Budget(device_hours=100.0, max_parallel_trials=2, max_trials=3)
    handle = await start(env, queue, execution="local-process", budget=budget)
    await wait_for_phase(handle, "awaiting_approval")
    await env.sleep(7 * DAY)
    await handle.execute_update(CampaignWorkflow.approve, ApproveInput(approver=APPROVER))

    for index in range(3):  # three jobs of two simulated days each, two at a time
        await launched_jobs(fakes, index + 1)
        await env.sleep(2 * DAY)
        await finish_job(handle, fakes, index)
    result: CampaignResult = await handle.result()

    assert result.status.phase == "done"
    assert [t.state for t in result.status.trials] == ["succeeded"] * 3
    assert len(fakes.launched) == 3 and fakes.trained == []  # nothing trained in a worker
    # The fallback polls back off to one an hour: 10 job-days cost ~24 polls a day plus each
    # job's ramp-up (1, 2, 4 ... 32 minutes), not the thousands a fixed short interval would.
    assert 0 < fakes.polls <= 10 * 24 + 3 * 7


async def test_a_job_that_dies_silently_is_relaunched_and_resumes(
    time_skipping_env: WorkflowEnvironment, queue: str, fakes: FakeActivities, workers: None
) -> None:
    env = time_skipping_env
    fakes.job_states[("baseline~r0", 1)] = "lost"
    budget = Budget(device_hours=100.0, max_parallel_trials=1, max_trials=1)
    handle = await start_approved(env, queue, execution="local-process", budget=budget)

    await launched_jobs(fakes, 1)
    await env.sleep(DAY)  # the poll fallback finds attempt 1 gone
    await launched_jobs(fakes, 2)
    await finish_job(handle, fakes, 1)
    result: CampaignResult = await handle.result()

    assert [(j.trial_id, j.attempt) for j in fakes.launched] == [
        ("baseline~r0", 1),
        ("baseline~r0", 2),
    ]
    assert result.status.trials[0].state == "succeeded"


async def test_a_scheduler_job_is_charged_its_accounts_and_a_timeout_resumes_at_once(
    time_skipping_env: WorkflowEnvironment, queue: str, fakes: FakeActivities, workers: None
) -> None:
    fakes.runner = "slurm"
    fakes.settled[("baseline~r0", 1)] = JobStatus(
        state="failed",
        error_type="JobTimeout",
        message="Slurm job 7 TIMEOUT",
        log_tail="*** JOB 7 CANCELLED DUE TO TIME LIMIT ***",
        device_hours=0.5,
    )
    budget = Budget(device_hours=100.0, max_parallel_trials=1, max_trials=1)
    handle = await start_approved(time_skipping_env, queue, execution="job", budget=budget)

    await launched_jobs(fakes, 1)
    first = fakes.launched[0]
    # Slurm stopped it at its time limit: the job says so, without a result.
    await handle.signal(
        CampaignWorkflow.job_finished,
        JobFinishedInput(trial_id=first.trial_id, job_id=first.job_id, result=None),
    )
    await launched_jobs(fakes, 2)
    await finish_job(handle, fakes, 1)
    result: CampaignResult = await handle.result()

    status = result.status
    assert [(j.trial_id, j.attempt) for j in fakes.launched] == [
        ("baseline~r0", 1),
        ("baseline~r0", 2),
    ]
    assert fakes.polls == 0  # woken by the job's word, not by the fallback poll
    assert [r.pattern_id for r in status.remedies] == ["job-timeout"]
    assert status.trials[0].state == "succeeded"
    # Both runs charged what the scheduler accounted: 0.5 for the timeout, 0.25 for the rest.
    assert status.ledger.spent == pytest.approx(0.75)
    assert status.trials[0].device_hours == pytest.approx(0.75)


async def test_a_job_that_reports_before_its_launch_is_seen_is_not_left_to_the_poll(
    time_skipping_env: WorkflowEnvironment, queue: str, fakes: FakeActivities, workers: None
) -> None:
    fakes.launch_gate = threading.Event()
    budget = Budget(device_hours=100.0, max_parallel_trials=1, max_trials=1)
    handle = await start_approved(time_skipping_env, queue, execution="job", budget=budget)

    await launched_jobs(fakes, 1)  # submitted, but launch_job has not returned yet
    await finish_job(handle, fakes, 0)
    fakes.launch_gate.set()
    result: CampaignResult = await handle.result()

    assert result.status.trials[0].state == "succeeded"
    assert fakes.polls == 0  # the early report was kept, not left for the fallback poll


async def test_a_job_lost_on_every_attempt_is_relaunched_by_the_runbook_then_escalated(
    time_skipping_env: WorkflowEnvironment, queue: str, fakes: FakeActivities, workers: None
) -> None:
    runbook = load_runbook()
    job_lost = runbook.get("job-lost")
    assert job_lost is not None
    launches = 1 + job_lost.max_attempts
    for attempt in range(1, launches + 1):
        fakes.job_states[("baseline~r0", attempt)] = "lost"
    budget = Budget(device_hours=100.0, max_parallel_trials=1, max_trials=1)
    handle = await start_approved(
        time_skipping_env, queue, execution="local-process", budget=budget
    )

    result: CampaignResult = await handle.result()

    # Each remedy relaunched the same trial as a new job attempt (resuming its checkpoint).
    assert [(j.trial_id, j.attempt) for j in fakes.launched] == [
        ("baseline~r0", a) for a in range(1, launches + 1)
    ]
    status = result.status
    assert [r.remedy.kind for r in status.remedies] == [r.kind for r in job_lost.remedies]
    assert all(r.run_trial_id == "baseline~r0" and r.state == "failed" for r in status.remedies)
    assert [r.attempt.attempt for r in fakes.remedies] == [1, 2, 3]
    assert status.trials[0].state == "failed"
    assert status.trials[0].error_type == "JobLost"
    # Then no remedy is left: it escalated, and nobody answered within the wait.
    [escalation] = status.escalations
    assert "remedies tried, none worked" in escalation.diagnosis.why_escalate
    assert escalation.resolution is not None and escalation.resolution.action == "skip"


async def test_stop_stops_external_jobs(
    time_skipping_env: WorkflowEnvironment, queue: str, fakes: FakeActivities, workers: None
) -> None:
    handle = await start_approved(time_skipping_env, queue, execution="local-process")
    await launched_jobs(fakes, 2)

    await handle.signal(CampaignWorkflow.stop, ControlInput(by=APPROVER, reason="enough"))
    result: CampaignResult = await handle.result()

    assert sorted(fakes.stopped) == sorted(j.trial_id for j in fakes.launched)
    assert [t.state for t in result.status.trials] == ["cancelled", "cancelled"]
    assert result.status.stop_reason == f"Stopped by {APPROVER}: enough."


async def test_exhausted_budget_waits_for_an_extension_then_goes_on(
    time_skipping_env: WorkflowEnvironment, queue: str, fakes: FakeActivities, workers: None
) -> None:
    # Trials are estimated and spend one hour each; two hours are approved.
    budget = Budget(device_hours=2.0, max_parallel_trials=1, max_trials=8)
    handle = await start_approved(time_skipping_env, queue, budget=budget)
    for _ in range(400):
        status = await handle.query(CampaignWorkflow.status)
        if status.needs_attention:
            break
        await asyncio.sleep(0.05)
    assert "budget exhausted" in status.needs_attention and len(fakes.trained) == 2
    described = await handle.describe()
    assert described.typed_search_attributes.get(NEEDS_ATTENTION) is True

    with pytest.raises(WorkflowUpdateFailedError):
        await handle.execute_update(
            CampaignWorkflow.extend_budget, ExtendBudgetInput(approver="mallory", device_hours=9)
        )
    ledger = await handle.execute_update(
        CampaignWorkflow.extend_budget, ExtendBudgetInput(approver=APPROVER, device_hours=10.0)
    )
    result: CampaignResult = await handle.result()

    assert ledger.approved == 12.0
    assert result.status.phase == "done" and not result.status.needs_attention
    assert len(fakes.trained) == 8
    assert result.status.ledger.spent == pytest.approx(8.0)
    # The 7 screening runs and the first gate run, the baseline's included.
    assert result.status.ledger.phases["validation"].spent == pytest.approx(8.0)
    assert result.status.ledger.reserved == pytest.approx(0.0)


async def test_budget_not_extended_in_time_reports_what_it_has(
    time_skipping_env: WorkflowEnvironment, queue: str, fakes: FakeActivities, workers: None
) -> None:
    budget = Budget(device_hours=2.0, max_parallel_trials=1, extension_wait_hours=48)
    handle = await start_approved(time_skipping_env, queue, budget=budget)

    result: CampaignResult = await handle.result()  # skips the 48 hours of waiting

    assert result.status.phase == "done" and len(result.status.trials) == 2
    assert result.status.ledger.spent <= result.status.ledger.approved
    assert "not extended" in result.status.message


async def test_approval_can_grant_a_different_budget(
    time_skipping_env: WorkflowEnvironment, queue: str, fakes: FakeActivities, workers: None
) -> None:
    budget = Budget(device_hours=100.0, max_parallel_trials=1, extension_wait_hours=0)
    handle = await start(time_skipping_env, queue, budget=budget)
    await wait_for_phase(handle, "awaiting_approval")
    approval = await handle.execute_update(
        CampaignWorkflow.approve,
        ApproveInput(approver=APPROVER, device_hours=3.0, comment="start small"),
    )
    result: CampaignResult = await handle.result()

    assert approval.device_hours == 3.0 and result.status.ledger.approved == 3.0
    assert len(fakes.trained) == 3 and result.status.ledger.spent == pytest.approx(3.0)
    # The baseline's cost counts in the validation phase, as the plan estimated it.
    assert set(result.status.ledger.phases) == {
        "validation",
        "combination",
        "exploitation",
        "confirmation",
    }


async def test_max_wall_time_stops_running_jobs(
    time_skipping_env: WorkflowEnvironment, queue: str, fakes: FakeActivities, workers: None
) -> None:
    budget = Budget(device_hours=100.0, max_wall_hours=24.0)
    handle = await start_approved(
        time_skipping_env, queue, execution="local-process", budget=budget
    )

    result: CampaignResult = await handle.result()  # the jobs never finish

    assert result.status.phase == "stopped"
    assert "max wall time" in result.status.stop_reason
    assert len(fakes.stopped) == 2


async def test_a_thousand_trials_continue_as_new_and_each_is_recorded_once(
    time_skipping_env: WorkflowEnvironment, queue: str, fakes: FakeActivities, workers: None
) -> None:
    fakes.extra_hypotheses = 993  # + 6 fixed + the baseline = 1,000 trials
    fakes.trial_seconds = 1.0
    budget = Budget(device_hours=10.0, max_parallel_trials=16, max_trials=1000)
    handle = await start_approved(time_skipping_env, queue, budget=budget, max_hypotheses=999)

    result: CampaignResult = await asyncio.wait_for(handle.result(), timeout=240)

    ids = [t.trial_id for t in result.status.trials]
    assert len(ids) == len(set(ids)) == 1000
    assert sorted(fakes.trained) == sorted(ids)
    assert sorted(r.spec.trial_id for r in fakes.recorded) == sorted(ids)
    assert result.status.runs >= 1000 // policy.MAX_TRIALS_PER_RUN
    assert all(t.state == "succeeded" for t in result.status.trials)


async def test_cancelling_the_campaign_stops_its_external_jobs(
    time_skipping_env: WorkflowEnvironment, queue: str, fakes: FakeActivities, workers: None
) -> None:
    handle = await start_approved(time_skipping_env, queue, execution="local-process")
    await launched_jobs(fakes, 2)

    await handle.cancel()
    with pytest.raises(WorkflowFailureError):
        await handle.result()

    assert sorted(fakes.stopped) == sorted(j.trial_id for j in fakes.launched)


async def test_spent_budget_stops_running_jobs_when_asked(
    time_skipping_env: WorkflowEnvironment, queue: str, fakes: FakeActivities, workers: None
) -> None:
    budget = Budget(
        device_hours=1.0, max_parallel_trials=2, on_exhausted="stop-running", extension_wait_hours=1
    )
    fakes.trial_seconds = 1800.0  # estimates: half an hour each, so two launch at once
    handle = await start_approved(
        time_skipping_env, queue, execution="local-process", budget=budget
    )
    await launched_jobs(fakes, 2)
    finished = fakes.result(handle.id, fakes.launched[0].trial_id).model_copy(
        update={"device_hours": 1.0}  # it overran its estimate and spent the whole budget
    )
    await handle.signal(
        CampaignWorkflow.job_finished,
        JobFinishedInput(
            trial_id=fakes.launched[0].trial_id, job_id=fakes.launched[0].job_id, result=finished
        ),
    )
    result: CampaignResult = await handle.result()

    first, second = (job.trial_id for job in fakes.launched)
    assert fakes.stopped == [second]
    assert {t.trial_id: t.state for t in result.status.trials} == {
        first: "succeeded",
        second: "cancelled",
    }


async def test_a_job_that_diverged_reports_by_signal_and_its_trial_is_remedied(
    time_skipping_env: WorkflowEnvironment, queue: str, fakes: FakeActivities, workers: None
) -> None:
    budget = Budget(device_hours=100.0, max_parallel_trials=1)
    handle = await start_approved(
        time_skipping_env, queue, execution="local-process", budget=budget
    )
    await launched_jobs(fakes, 1)
    job = fakes.launched[0]
    diverged = TrialResult(
        campaign_id=handle.id,
        trial_id=job.trial_id,
        state="diverged",
        error="training diverged: loss is nan at step 2 (not finite)",
        error_type="DivergenceError",
        device_hours=0.1,
    )
    await handle.signal(
        CampaignWorkflow.job_finished,
        JobFinishedInput(trial_id=job.trial_id, job_id=job.job_id, result=diverged),
    )
    # Every other job (the remedy's linked trial among them) finishes once the campaign
    # knows it was launched (a report before that is taken for a stale one and ignored).
    finished = {0}
    for _ in range(600):
        status: CampaignStatus = await handle.query(CampaignWorkflow.status)
        if status.remedies and status.remedies[0].state != "running":
            break
        launched = {t.job.job_id for t in status.trials if t.job is not None}
        for index, other in enumerate(fakes.launched):
            if index not in finished and other.job_id in launched:
                await finish_job(handle, fakes, index)
                finished.add(index)
        await asyncio.sleep(0.05)
    trials = {t.trial_id: t for t in status.trials}
    assert trials[job.trial_id].state == "diverged"
    [remedy] = status.remedies
    assert (remedy.pattern_id, remedy.state) == ("nan-loss", "succeeded"), [
        (t.trial_id, t.state) for t in status.trials
    ]
    assert trials[remedy.run_trial_id].remedy_of == job.trial_id
