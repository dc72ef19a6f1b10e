"""The processes ``bench.worker_capacity`` measures, each started as ``--serve <role>``.

``orchestration``: one worker with the real CampaignWorkflow and the real bookkeeping
activities (``worker.orchestration_activities``), planning and preflight answered by trivial
fakes. ``jobs``: job control whose jobs cost nothing (``InstantJobs``): ``launch_job``
returns at once and, some seconds later, the "job" signals ``job_finished`` as a real job's
process does, so only orchestration is measured.
"""

import argparse
import asyncio
import signal
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from temporalio import activity
from temporalio.client import Client
from temporalio.worker import Worker

from bench.orchestration_overhead import proposals_of
from client import make_client
from contracts import (
    JobFinishedInput,
    JobHandle,
    JobStatus,
    LaunchJobInput,
    Metrics,
    PreflightInput,
    PreflightReport,
    ProposalInput,
    Proposals,
    TrialResult,
    TrialSpec,
)
from contracts.job import LOCAL_RUNNER
from settings import Settings
from workflows.campaign import CampaignWorkflow
from workflows.options import JOBS_QUEUE

# A trial's estimate in the plan and its charge: small, so the budget never binds.
TRIAL_DEVICE_HOURS = 0.001


def trial_result(spec: TrialSpec) -> TrialResult:
    """A succeeded trial with metrics, as a real job reports (sizes the payloads alike)."""
    ne = 0.95 + 0.001 * (spec.model.seed % 7)
    return TrialResult(
        campaign_id=spec.campaign_id,
        trial_id=spec.trial_id,
        state="succeeded",
        validation=Metrics(ne=ne, auc=1 - ne / 2, logloss=ne * 0.6, examples=1000),
        test=Metrics(ne=ne + 0.01, auc=1 - ne / 2, logloss=ne * 0.6, examples=1000),
        duration_s=TRIAL_DEVICE_HOURS * 3600,
        device_hours=TRIAL_DEVICE_HOURS,
        steps=10,
    )


def orchestration_activities(settings: Settings, trials: int) -> list[Callable[..., object]]:
    """The orchestration queue's activities: real bookkeeping, trivial planning."""
    # Imported here: the driver process, which imports this module too, needs none of them.
    import worker
    from activities.evidence import EvidenceActivities
    from activities.recovery import RecoveryActivities
    from activities.results import ResultActivities
    from activities.search import SearchActivities
    from runbooks import load_runbook
    from store import InsightsStore

    @activity.defn(name="propose_hypotheses")
    def propose_hypotheses(inp: ProposalInput) -> Proposals:
        return proposals_of(trials).model_copy(
            update={
                "estimated_device_hours_per_trial": TRIAL_DEVICE_HOURS,
                "estimated_device_hours_per_trial_high": TRIAL_DEVICE_HOURS,
            }
        )

    @activity.defn(name="propose_hypotheses_llm")
    def propose_hypotheses_llm(inp: ProposalInput) -> Proposals:
        return Proposals(source="llm")

    @activity.defn(name="preflight_campaign")
    def preflight_campaign(inp: PreflightInput) -> PreflightReport:
        return PreflightReport()

    return worker.orchestration_activities(
        [propose_hypotheses, propose_hypotheses_llm, preflight_campaign],
        ResultActivities(InsightsStore(settings.database)),
        RecoveryActivities(load_runbook(), None),
        EvidenceActivities(),
        SearchActivities(settings.search_storage_url),
        worker.notify_activities(settings),  # no Slack token: notifications only log
    )


class InstantJobs:
    """Job control whose jobs end ``seconds`` after launch and report by signal."""

    def __init__(self, client: Client, seconds: float) -> None:
        self.client = client
        self.seconds = seconds
        self.due: dict[str, tuple[float, TrialResult]] = {}
        self.tasks: set[asyncio.Task[None]] = set()

    @activity.defn(name="launch_job")
    async def launch_job(self, inp: LaunchJobInput) -> JobHandle:
        spec = inp.spec
        job = JobHandle(
            runner=LOCAL_RUNNER,
            job_id=f"{spec.campaign_id}/{spec.trial_id}/{inp.attempt}",
            trial_id=spec.trial_id,
            attempt=inp.attempt,
        )
        result = trial_result(spec)
        self.due[job.job_id] = (time.monotonic() + self.seconds, result)
        task = asyncio.create_task(self._finish(spec.campaign_id, job, result))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return job

    async def _finish(self, campaign_id: str, job: JobHandle, result: TrialResult) -> None:
        await asyncio.sleep(self.seconds)
        finished = JobFinishedInput(trial_id=job.trial_id, job_id=job.job_id, result=result)
        try:
            await self.client.get_workflow_handle(campaign_id).signal("job_finished", finished)
        except Exception as err:  # the poll fallback finds the result: as a real job's
            print(f"signal failed: {err}", file=sys.stderr)

    @activity.defn(name="poll_job")
    async def poll_job(self, job: JobHandle) -> JobStatus:
        due, result = self.due.get(job.job_id, (0.0, None))
        if result is None:
            return JobStatus(state="lost")
        if time.monotonic() < due:
            return JobStatus(state="running")
        print(f"late: {job.job_id} found by the poll fallback", file=sys.stderr)
        return JobStatus.ended(result)

    @activity.defn(name="settle_job")
    async def settle_job(self, job: JobHandle) -> JobStatus:
        _, result = self.due[job.job_id]
        return JobStatus.ended(result)

    @activity.defn(name="stop_job")
    async def stop_job(self, job: JobHandle) -> JobStatus:
        return JobStatus(state="cancelled")


async def serve(args: argparse.Namespace) -> None:
    """Run one worker process (``--serve orchestration|jobs``) until SIGTERM."""
    from worker import WORKFLOW_RUNNER, job_activities

    settings = Settings(temporal_address=args.address, data_dir=Path(args.data_dir))
    client = await make_client(settings)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    if args.serve == "orchestration":
        worker = Worker(
            client,
            task_queue=args.queue,
            workflows=[CampaignWorkflow],
            activities=orchestration_activities(settings, args.trials),
            activity_executor=ThreadPoolExecutor(max_workers=4),
            workflow_runner=WORKFLOW_RUNNER,
        )
    else:
        jobs = InstantJobs(client, args.job_seconds)
        worker = Worker(
            client,
            task_queue=JOBS_QUEUE,
            activities=job_activities(jobs),
            max_concurrent_activities=200,
        )
    async with worker:
        print("ready", flush=True)
        await stop.wait()
