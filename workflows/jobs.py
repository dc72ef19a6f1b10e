"""Trials as external jobs: launch, sleep until the job reports, settle or stop it.

A job signals ``job_finished`` when it ends; the workflow sleeps on that (holding no worker)
with a slow poll as the fallback for a job that died silently. A scheduler's job (Slurm) is
settled from the scheduler's own record, which also says what it charged.
"""

from datetime import timedelta
from typing import Any

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from contracts import JobHandle, JobStatus, LaunchJobInput, TrialResult, TrialSpec
    from contracts.job import SCHEDULER_RUNNERS
    from workflows import options, policy
    from workflows.context import CampaignContext


class JobRuns:
    """Runs trials as jobs on the jobs queue's backend.

    Args:
        ctx: The campaign's context (its job reports arrive there, by signal).
    """

    def __init__(self, ctx: CampaignContext) -> None:
        self.ctx = ctx

    async def train(self, spec: TrialSpec, attempt: int = 1) -> TrialResult:
        """Launch ``spec`` as an external job and sleep until it reports (or is found dead).

        Under runbooks a lost job comes back as a ``JobLost`` failure, which the runbook
        remedies (a relaunch resumes from the checkpoint); before, it was relaunched here.
        """
        ctx = self.ctx
        relaunch_here = ctx.state.recovery != "runbook"
        while True:
            job: JobHandle = await control_job(
                "launch_job",
                LaunchJobInput(spec=spec, attempt=attempt),
                JobHandle,
                f"launch {spec.trial_id} (attempt {attempt})",
            )
            ctx.update_trial(spec.trial_id, job=job)
            if job.job_id in ctx.early_job_reports:  # it reported before its launch was seen
                ctx.job_results[spec.trial_id] = ctx.early_job_reports.pop(job.job_id)
            ctx.show_details()
            status = await self._wait(job)
            if (
                relaunch_here
                and status.state == "lost"
                and attempt < policy.MAX_JOB_ATTEMPTS
                and not ctx.stopping
            ):
                attempt += 1
                continue
            if status.result is not None:
                return status.result
            return TrialResult(
                campaign_id=spec.campaign_id,
                trial_id=spec.trial_id,
                state=policy.TRIAL_STATE_OF_JOB[status.state],
                error=status.message or f"job {job.job_id} ended {status.state} without a result",
                # Backends name the failure; older histories' statuses leave it empty.
                error_type=status.error_type or ("JobLost" if status.state == "lost" else ""),
                log_tail=status.log_tail,
                device_hours=status.device_hours or 0.0,
            )

    async def _wait(self, job: JobHandle) -> JobStatus:
        ctx = self.ctx
        trial_id = job.trial_id
        polls = 0
        while True:
            try:
                await workflow.wait_condition(
                    lambda: trial_id in ctx.job_results or ctx.stopping or ctx.halting,
                    timeout=policy.job_poll_interval(polls),
                    timeout_summary=f"{trial_id}: job {job.job_id} running (slow poll fallback)",
                )
            except TimeoutError:
                polled: JobStatus = await control_job(
                    "poll_job", job, JobStatus, f"poll {trial_id}"
                )
                if polled.state != "running":
                    return polled
                polls += 1
                continue
            if trial_id in ctx.job_results:
                result = ctx.job_results.pop(trial_id)
                if job.runner not in SCHEDULER_RUNNERS and result is not None:
                    return JobStatus.ended(result)  # a local job charges its own wall time
                # A scheduler's job: its final state and the charge the scheduler accounted.
                settled: JobStatus = await control_job(
                    "settle_job", job, JobStatus, f"settle {trial_id} (scheduler's record)"
                )
                if settled.state == "running":  # requeued by its scheduler: it runs again
                    polls = 0
                    continue
                return settled
            stopped: JobStatus = await control_job(
                "stop_job",
                job,
                JobStatus,
                f"stop {trial_id} (checkpoint and exit)",
                timeout=options.JOB_STOP_TIMEOUT,
            )
            return stopped


async def control_job(
    name: str,
    arg: object,
    result_type: type,
    summary: str,
    timeout: timedelta = options.JOB_CONTROL_TIMEOUT,
) -> Any:
    """Run a job-control activity (launch, poll, settle, stop) on the jobs queue."""
    return await workflow.execute_activity(
        name,
        arg,
        task_queue=options.JOBS_QUEUE,
        result_type=result_type,
        start_to_close_timeout=timeout,
        retry_policy=options.BOOKKEEPING_RETRY,
        summary=summary,
    )
