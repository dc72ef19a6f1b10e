"""The job activities: launch, poll, settle and stop trials running as jobs, on whichever
backend the jobs worker was given (``activities/backends``)."""

from opentelemetry import trace
from temporalio import activity

from activities import telemetry
from activities.backends import JobRunner
from contracts import JobHandle, JobStatus, LaunchJobInput


class JobActivities:
    """launch_job / poll_job / settle_job / stop_job over an injected backend."""

    def __init__(self, runner: JobRunner) -> None:
        self._runner = runner

    @activity.defn(name="launch_job")
    def launch_job(self, inp: LaunchJobInput) -> JobHandle:
        """Launch a trial as an external job (idempotent per campaign, trial and attempt)."""
        telemetry.record_queue_latency()
        telemetry.start_trial(inp.spec)
        return self._runner.run(inp.spec, inp.attempt)

    @activity.defn(name="poll_job")
    def poll_job(self, job: JobHandle) -> JobStatus:
        """Where a job stands; the fallback for a job that never signalled."""
        telemetry.record_queue_latency()
        status = self._runner.poll(job)
        span = trace.get_current_span()
        span.set_attributes({"rea.trial_id": job.trial_id, "rea.job_state": status.state})
        if status.result is not None:
            span.set_attributes(telemetry.result_attributes(status.result))
        return status

    @activity.defn(name="settle_job")
    def settle_job(self, job: JobHandle) -> JobStatus:
        """The final status of a job that said it ended, once its scheduler has a record of
        it: with the charge the scheduler accounted."""
        return self._runner.settle(job)

    @activity.defn(name="stop_job")
    def stop_job(self, job: JobHandle) -> JobStatus:
        """Stop a job: it checkpoints and exits; reports its final state."""
        return self._runner.stop(job)
