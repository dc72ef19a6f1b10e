"""Composition root: builds the client, wires real ports into activities, runs workers by role.

Roles:
    orchestration: campaign workflows plus planning and bookkeeping activities.
    training: the training activity, one trial per slot (one worker per GPU host).
    jobs: launches, polls and stops trials that run as their own processes.
"""

import asyncio
import logging
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from typing import Any, Literal, Protocol

from temporalio.api.enums.v1 import IndexedValueType
from temporalio.api.operatorservice.v1 import AddSearchAttributesRequest
from temporalio.client import Client
from temporalio.service import RPCError, RPCStatusCode
from temporalio.worker import Worker
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner, SandboxRestrictions

import observability
from activities.evidence import EvidenceActivities
from activities.notify import NotifyActivities, slack_web_client
from activities.planning import PlanningActivities
from activities.recovery import RecoveryActivities
from activities.results import ResultActivities
from activities.search import SearchActivities
from client import make_client
from runbooks import load_runbook
from settings import Settings
from store import InsightsStore
from workflows.campaign import CampaignWorkflow
from workflows.options import (
    JOBS_QUEUE,
    ORCHESTRATION_QUEUE,
    SEARCH_ATTRIBUTES,
    TRAINING_QUEUE,
)

Role = Literal["orchestration", "training", "jobs"]
ROLES: tuple[Role, ...] = ("orchestration", "training", "jobs")

# Contracts are immutable pydantic models: share them with the sandbox instead of re-importing
# pydantic for every workflow run.
WORKFLOW_RUNNER = SandboxedWorkflowRunner(
    restrictions=SandboxRestrictions.default.with_passthrough_modules("pydantic", "contracts")
)

# Cancellation reaches an activity with a heartbeat reply; heartbeats are throttled to this, so
# it bounds how long a stopped campaign waits for its trainers to notice.
HEARTBEAT_THROTTLE = timedelta(seconds=5)

# How long stopping the workers may take: a training step, a checkpoint and the planner's
# calibration (seconds) fit well within it.
SHUTDOWN_TIMEOUT = timedelta(seconds=15)

log = logging.getLogger("openrea.worker")


def orchestration_worker(
    client: Client, settings: Settings, task_queue: str = ORCHESTRATION_QUEUE
) -> Worker:
    """Campaign workflows with planning, research-agent and bookkeeping activities."""
    from activities.agents.llm import LlmActivities, LlmAgent
    from activities.estimates import HistoryCorrected
    from activities.preflight import PreflightActivities, production_ports
    from ranking_models.cost import estimate_seconds_range, fraction_fixed_share
    from ranking_models.tasks import describe_task, relative_cost

    store = InsightsStore(settings.database)
    # Loaded (and validated) here, so a malformed runbook file stops the worker at start with
    # the file and field named, not a campaign at its first failure.
    runbook = load_runbook(settings.runbook_dir)
    planning = PlanningActivities(
        # The host's estimate, corrected by what past trials on the same data cost.
        estimate_seconds=HistoryCorrected(estimate_seconds_range, store),
        store=store,
        describe_task=describe_task,
        relative_cost=relative_cost,
        jobs_run_on=describe_job_backend(settings),
        fixed_share=fraction_fixed_share,
    )
    agent = (
        LlmAgent(
            base_url=settings.llm_base_url,
            model=settings.llm_model,
            api_key=settings.llm_api_key,
            timeout_s=settings.llm_timeout_s,
            store=store,
        )
        if settings.llm_base_url
        else None
    )
    llm = LlmActivities(agent)
    recovery = RecoveryActivities(runbook, store, agent, user_dir=settings.runbook_dir)
    preflight = PreflightActivities(production_ports(), settings.data_dir)
    results = ResultActivities(store)
    evidence = EvidenceActivities()
    search = SearchActivities(settings.search_storage_url)
    notify = notify_activities(settings)
    return Worker(
        client,
        task_queue=task_queue,
        workflows=[CampaignWorkflow],
        activities=orchestration_activities(
            [
                planning.propose_hypotheses,
                planning.propose_space_points,
                planning.plan_campaign,
                llm.propose_hypotheses_llm,
                preflight.preflight_campaign,
            ],
            results,
            recovery,
            evidence,
            search,
            notify,
        ),
        activity_executor=ThreadPoolExecutor(max_workers=4),
        workflow_runner=WORKFLOW_RUNNER,
    )


def orchestration_activities(
    planning: Sequence[Callable[..., object]],
    results: ResultActivities,
    recovery: RecoveryActivities,
    evidence: EvidenceActivities,
    search: SearchActivities,
    notify: NotifyActivities,
) -> list[Callable[..., object]]:
    """The orchestration queue's activities, the one list of them.

    Args:
        planning: What comes before approval: the research agents' proposals and the
            preflight checklist (``bench.worker_capacity`` passes trivial fakes).
        results: Trials and campaigns into the insights database.
        recovery: Diagnosis of failed trials, and the remedies' record.
        evidence: The statistical gate and the proposal's model footprint.
        search: The exploitation phase's Optuna study.
        notify: Slack notifications.

    Returns:
        Every activity the campaign workflow calls on its own queue.
    """
    return [
        *planning,
        results.record_trial,
        results.record_campaign,
        recovery.diagnose_failure,
        recovery.record_remedy,
        evidence.gate_hypotheses,
        evidence.model_footprint,
        search.ask,
        search.tell,
        search.should_prune,
        notify.notify_slack,
    ]


def notify_activities(settings: Settings) -> NotifyActivities:
    """Slack notifications: posted with the bot token, or only logged without one."""
    client = (
        slack_web_client(settings.slack_bot_token, settings.slack_api_url)
        if settings.slack_bot_token
        else None
    )
    return NotifyActivities(client, settings.slack_channel, web_ui=settings.workflow_url)


def training_worker(client: Client, settings: Settings, task_queue: str = TRAINING_QUEUE) -> Worker:
    """Training in this worker, ``settings.training_slots`` trials at once."""
    from activities.training import TrainingActivities
    from ranking_models import threads
    from ranking_models.trainer import train

    # Each trial's thread team is its share of the cores: a trial per slot (see threads).
    threads.configure(slots=settings.training_slots, fixed=settings.trial_threads)

    # Exploitation trials report each epoch to their study, whose pruner may stop them.
    search = SearchActivities(settings.search_storage_url)
    training = TrainingActivities(
        train=train, data_dir=settings.data_dir, prune=search.should_prune
    )
    return Worker(
        client,
        task_queue=task_queue,
        activities=[training.train_trial],
        activity_executor=ThreadPoolExecutor(max_workers=settings.training_slots),
        max_concurrent_activities=settings.training_slots,
        max_heartbeat_throttle_interval=HEARTBEAT_THROTTLE,
    )


def describe_job_backend(settings: Settings) -> str:
    """Where trials that run as jobs go, as the plan says it (the estimate assumes it)."""
    if settings.job_backend == "slurm":
        partition = settings.slurm_partition or "the default partition"
        return (
            f"Slurm, {partition} (one {settings.slurm_device} per device), "
            "assumed as fast as the planning host"
        )
    return "local processes on the jobs worker's host (measured on the planning host)"


def jobs_worker(client: Client, settings: Settings, task_queue: str = JOBS_QUEUE) -> Worker:
    """Launch, poll and stop trials running as jobs on the backend ``REA_JOB_BACKEND`` names.

    With the local backend these activities manage this host's processes, and polls and
    stops must reach the host that launched the job: run one jobs worker (the queue is
    shared; per-host queues are not built). With Slurm any number of hosts that can run
    sbatch and sacct (and see the data dir) will do.
    """
    from activities.backends import make_runner
    from activities.jobs import JobActivities

    jobs = JobActivities(make_runner(settings))
    return Worker(
        client,
        task_queue=task_queue,
        activities=job_activities(jobs),
        activity_executor=ThreadPoolExecutor(max_workers=4),
    )


class JobControl(Protocol):
    """The job verbs the jobs queue serves: ``JobActivities`` over a backend, or a
    benchmark's stand-in whose jobs cost nothing (sync or async alike)."""

    def launch_job(self, inp: Any, /) -> Any: ...

    def poll_job(self, job: Any, /) -> Any: ...

    def settle_job(self, job: Any, /) -> Any: ...

    def stop_job(self, job: Any, /) -> Any: ...


def job_activities(jobs: JobControl) -> list[Callable[..., object]]:
    """The jobs queue's activities, the one list of them: launch, poll, settle, stop."""
    return [jobs.launch_job, jobs.poll_job, jobs.settle_job, jobs.stop_job]


def build_workers(
    client: Client, settings: Settings, roles: Sequence[Role] = ROLES
) -> list[Worker]:
    """One worker per role."""
    builders = {
        "orchestration": orchestration_worker,
        "training": training_worker,
        "jobs": jobs_worker,
    }
    return [builders[role](client, settings) for role in roles]


async def ensure_search_attributes(client: Client, namespace: str) -> None:
    """Register openrea's search attributes where missing (idempotent).

    One call per attribute, tolerating "already exists": the time-skipping test server
    implements adding search attributes but not listing them.
    """
    for key in SEARCH_ATTRIBUTES:
        try:
            await client.operator_service.add_search_attributes(
                AddSearchAttributesRequest(
                    namespace=namespace,
                    search_attributes={
                        key.name: IndexedValueType.ValueType(key.indexed_value_type.value)
                    },
                )
            )
        except RPCError as err:
            if err.status != RPCStatusCode.ALREADY_EXISTS:
                raise


async def run_workers(
    settings: Settings, roles: Sequence[Role] = ROLES, client: Client | None = None
) -> None:
    """Run workers for ``roles`` until cancelled, then shut them down in order.

    Cancelling this coroutine calls each worker's ``shutdown``: in-worker trials stop at their
    next step after a checkpoint, and their retries resume on the next worker. (Cancelling
    the SDK's own tasks instead, as ``asyncio.run`` does on an interrupt, can leave a worker
    waiting for them for ever.)
    """
    observability.setup(settings)
    client = client or await make_client(settings)
    await ensure_search_attributes(client, settings.namespace)
    workers = build_workers(client, settings, roles)
    log.info("worker running: roles=%s server=%s", ",".join(roles), settings.temporal_address)
    runs = [asyncio.create_task(w.run()) for w in workers]
    try:
        # asyncio.wait, unlike gather, leaves the runs alone when this task is cancelled.
        done, _ = await asyncio.wait(runs, return_when=asyncio.FIRST_EXCEPTION)
    except asyncio.CancelledError:
        await _shut_down(workers, runs)
        raise
    for task in done:
        task.result()  # a worker that failed: its error, after the others stop
    await _shut_down(workers, runs)


async def _shut_down(workers: Sequence[Worker], runs: Sequence[asyncio.Task[None]]) -> None:
    try:
        await asyncio.wait_for(
            asyncio.gather(*(w.shutdown() for w in workers), return_exceptions=True),
            SHUTDOWN_TIMEOUT.total_seconds(),
        )
    except TimeoutError:
        log.warning("workers did not stop within %s; leaving them", SHUTDOWN_TIMEOUT)
    for run in runs:
        run.cancel()
    await asyncio.gather(*runs, return_exceptions=True)
