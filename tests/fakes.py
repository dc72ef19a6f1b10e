"""Activities registered under the real names, for workflow tests and recorded histories."""

import asyncio
import tempfile
import threading
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field

from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.evidence import EvidenceActivities
from activities.planning import fixed_hypotheses, make_plan
from activities.recovery import RecoveryActivities
from activities.search import SearchActivities
from contracts import (
    CampaignRecord,
    Hypothesis,
    JobHandle,
    JobState,
    JobStatus,
    LaunchJobInput,
    Notification,
    NotificationResult,
    Plan,
    PlanningInput,
    PreflightInput,
    PreflightItem,
    PreflightReport,
    ProposalInput,
    Proposals,
    RemedyRecord,
    TrialRecord,
    TrialResult,
    TrialSpec,
)
from runbooks import load_runbook
from tests.factories import result_of
from workflows.arms import arm_hypotheses

# Validation NE by arm (the mean over seeds): two hypotheses beat the baseline (0.90), the
# others do not, and their merge beats both; tuned arms (x<n>) get TUNED_NE.
NE = {
    "baseline": 0.90,
    "v-wider-embeddings": 0.88,
    "v-wider-over-arch": 0.89,
    "v-deeper-over-arch": 0.91,
    "v-lower-dense-lr": 0.95,
    "v-larger-batch": 0.93,
    "v-over-arch-dropout": 0.92,
    "c-wider-embeddings+wider-over-arch": 0.86,
    # The action space's probes (multi-fidelity campaigns): one finds a big lever.
    "v-probe-1": 0.84,
    "v-probe-2": 0.93,
}
# The action space's candidates the fake proposes (multi-fidelity campaigns).
SPACE_HYPOTHESES = [
    Hypothesis(id="probe-1", title="epochs 1→2", source="search-space", changes={"epochs": 2}),
    Hypothesis(
        id="probe-2", title="dropout 0→0.1", source="search-space", changes={"dropout": 0.1}
    ),
    Hypothesis(
        id="point-1", title="random point 1", source="search-space", changes={"dense_lr": 0.01}
    ),
]
HOUR = 3600.0
TUNED_NE = 0.95


def seed_noise(seed: int) -> float:
    """NE noise every arm shares on a seed (same init and data order): pairing cancels it."""
    return 0.004 * (((seed * 37) % 7) - 3) / 3


def arm_noise(arm: str, seed: int) -> float:
    """The small part of the noise that pairing cannot cancel."""
    return 0.0005 * ((zlib.crc32(f"{arm}/{seed}".encode()) % 201) - 100) / 100


def ne_of(spec: TrialSpec, means: dict[str, float] = NE, tuned: float = TUNED_NE) -> float:
    """The fake trainer's validation NE: the arm's mean plus seed noise."""
    arm = spec.arm or spec.trial_id
    mean = means.get(arm, tuned if is_tuned(arm) else 0.95)
    return mean + seed_noise(spec.model.seed) + arm_noise(arm, spec.model.seed)


def is_tuned(arm: str) -> bool:
    """A move of the whole-space search (``x<n>``), whatever phase runs it."""
    return arm.startswith("x") and arm[1:].isdigit()


@dataclass
class FakeActivities:
    """Activities registered under the real names; they record what the workflow asked."""

    trial_seconds: float = HOUR
    # Confirmation trials cost this many times the others (a campaign's estimate runs short).
    cost_on_test: float = 1.0
    # Every tuned arm's (x<n>) mean validation NE, and how many times the baseline its
    # trials cost (a move to wider layers runs longer though its epochs are the same).
    tuned_ne: float = TUNED_NE
    tuned_cost: float = 1.0
    # Every trial costs this many times what it otherwise would (a busier host than planned).
    slow: float = 1.0
    # How many times the baseline an arm's trials cost, by arm (a merge: the product of its
    # parts'); 1 when absent.
    arm_cost: dict[str, float] = field(default_factory=dict)
    # Mean validation NE by arm (see NE); an arm not listed gets 0.95.
    ne: dict[str, float] = field(default_factory=lambda: dict(NE))
    # Trials that fail (a typed error) or diverge (a result without metrics), with a message;
    # keyed by trial id, or by arm for all its trials.
    fail: dict[str, str] = field(default_factory=dict)
    # The error type of those failures (keyed alike); BadSpecError when absent.
    fail_type: dict[str, str] = field(default_factory=dict)
    diverge: dict[str, str] = field(default_factory=dict)
    # Training holds each trial this many real seconds, so that concurrency can be observed.
    hold_s: float = 0.0
    in_flight: int = 0
    max_in_flight: int = 0
    block_until_cancelled: bool = False
    planning_may_finish: threading.Event = field(default_factory=threading.Event)
    # Planning fails with this (error type, message), non-retryable, when set.
    planning_error: tuple[str, str] | None = None
    trained: list[str] = field(default_factory=list)
    specs: dict[str, TrialSpec] = field(default_factory=dict)
    recorded: list[TrialRecord] = field(default_factory=list)
    campaigns: list[CampaignRecord] = field(default_factory=list)
    # The LLM agent: what it proposes, or the error each of its attempts raises.
    llm_hypotheses: list[Hypothesis] = field(default_factory=list)
    llm_error: str | None = None
    llm_inputs: list[ProposalInput] = field(default_factory=list)
    # The action space's source (multi-fidelity campaigns), and what it was asked.
    space_hypotheses: list[Hypothesis] = field(default_factory=lambda: list(SPACE_HYPOTHESES))
    space_inputs: list[ProposalInput] = field(default_factory=list)
    # Extra hypotheses (seed changes) for campaigns of many trials; NE 0.95, never improving.
    extra_hypotheses: int = 0
    # Preflight: the checklist's failing items (every other item passes).
    preflight_failures: list[PreflightItem] = field(default_factory=list)
    preflights: int = 0
    remedies: list[RemedyRecord] = field(default_factory=list)
    # External jobs: what poll_job answers per (trial, attempt); "running" when absent.
    job_states: dict[tuple[str, int], JobState] = field(default_factory=dict)
    launched: list[JobHandle] = field(default_factory=list)
    stopped: list[str] = field(default_factory=list)
    polls: int = 0
    # The backend the fake jobs claim ("slurm": the campaign settles them with settle_job),
    # and what settle_job answers per (trial, attempt); absent: the job's result, charged
    # settled_hours.
    runner: str = "fake"
    # launch_job waits for this before it returns, when set (a job that reports before the
    # campaign has seen its launch).
    launch_gate: threading.Event | None = None
    settled: dict[tuple[str, int], JobStatus] = field(default_factory=dict)
    settled_hours: float = 0.25
    # Slack notifications the campaign asked for (the real activity is tested in
    # tests/integrations); each attempt raises notify_error when set.
    notifications: list[Notification] = field(default_factory=list)
    notify_error: str | None = None
    # The real notify_slack activity instead of the fake (against a fake Slack Web API).
    slack: Callable[..., object] | None = None
    # Exploitation trials (Optuna numbers) pruned after their first epoch, charged half.
    prune: set[int] = field(default_factory=set)
    # The Optuna studies of exploitation (a throwaway SQLite file).
    search_url: str = field(
        default_factory=lambda: f"sqlite:///{tempfile.mkdtemp(prefix='rea-optuna-')}/s.sqlite"
    )

    def all(self) -> list[Callable[..., object]]:
        @activity.defn(name="plan_campaign")
        def plan_campaign(inp: PlanningInput) -> Plan:
            self.planning_may_finish.wait(timeout=30)
            if self.planning_error is not None:
                error_type, message = self.planning_error
                raise ApplicationError(message, type=error_type, non_retryable=True)
            plan = make_plan(inp, estimate_seconds=lambda model, dataset: (self.trial_seconds,) * 2)
            extra = [
                Hypothesis(id=f"seed-{i}", title=f"seed {i}", changes={"seed": i})
                for i in range(1, self.extra_hypotheses + 1)
            ]
            return plan.model_copy(update={"hypotheses": plan.hypotheses + extra})

        @activity.defn(name="propose_hypotheses")
        def propose_hypotheses(inp: ProposalInput) -> Proposals:
            # The first versions' six mutations (NE keyed by their arms), ranked in that order.
            self.planning_may_finish.wait(timeout=30)
            if self.planning_error is not None:
                error_type, message = self.planning_error
                raise ApplicationError(message, type=error_type, non_retryable=True)
            fixed = fixed_hypotheses(inp.request.baseline) + [
                Hypothesis(id=f"seed-{i}", title=f"seed {i}", changes={"seed": i})
                for i in range(1, self.extra_hypotheses + 1)
            ]
            ranked = [
                h.model_copy(update={"source": "knowledge", "expected_gain": 0.01 / (1 + i)})
                for i, h in enumerate(fixed)
            ]
            return Proposals(
                source="knowledge",
                hypotheses=ranked,
                estimated_device_hours_per_trial=self.trial_seconds / 3600.0,
                estimated_device_hours_per_trial_high=self.trial_seconds / 3600.0,
            )

        @activity.defn(name="propose_space_points")
        def propose_space_points(inp: ProposalInput) -> Proposals:
            self.space_inputs.append(inp)
            return Proposals(source="search-space", hypotheses=self.space_hypotheses)

        @activity.defn(name="propose_hypotheses_llm")
        def propose_hypotheses_llm(inp: ProposalInput) -> Proposals:
            self.llm_inputs.append(inp)
            if self.llm_error is not None:
                raise ApplicationError(self.llm_error, type="APIStatusError")
            if not self.llm_hypotheses:
                return Proposals(source="llm", note="no LLM endpoint configured")
            return Proposals(source="llm", hypotheses=self.llm_hypotheses)

        @activity.defn(name="record_campaign")
        def record_campaign(record: CampaignRecord) -> None:
            self.campaigns.append(record)

        @activity.defn(name="record_trial")
        def record_trial(record: TrialRecord) -> None:
            self.recorded.append(record)

        @activity.defn(name="preflight_campaign")
        def preflight_campaign(inp: PreflightInput) -> PreflightReport:
            self.preflights += 1
            failing = {item.check: item for item in self.preflight_failures}
            checks = ("data", "specs", "smoke_step", "memory", "cost", "access")
            return PreflightReport(
                items=[failing.get(c, PreflightItem(check=c, ok=True)) for c in checks]
            )

        @activity.defn(name="record_remedy")
        def record_remedy(record: RemedyRecord) -> None:
            self.remedies.append(record)

        @activity.defn(name="notify_slack")
        def notify_slack(notification: Notification) -> NotificationResult:
            if self.notify_error is not None:
                raise ApplicationError(self.notify_error, type="SlackApiError")
            self.notifications.append(notification)
            return NotificationResult(sent=True, channel="C-fake", ts=str(len(self.notifications)))

        # The gate, the search and the diagnosis are the real activities: numpy, scipy, an
        # SQLite study and the shipped runbooks.
        evidence = EvidenceActivities()
        search = SearchActivities(self.search_url)
        diagnosis = RecoveryActivities(load_runbook(), store=None)
        return [
            preflight_campaign,
            record_remedy,
            self.slack or notify_slack,
            diagnosis.diagnose_failure,
            plan_campaign,
            propose_hypotheses,
            propose_hypotheses_llm,
            propose_space_points,
            record_campaign,
            record_trial,
            evidence.gate_hypotheses,
            evidence.model_footprint,
            search.ask,
            search.tell,
            search.should_prune,
        ]

    def training(self) -> list[Callable[..., object]]:
        @activity.defn(name="train_trial")
        async def train_trial(spec: TrialSpec) -> TrialResult:
            self.trained.append(spec.trial_id)
            self.specs[spec.trial_id] = spec
            if failure := self.fail.get(spec.trial_id, self.fail.get(spec.arm)):
                error_type = self.fail_type.get(
                    spec.trial_id, self.fail_type.get(spec.arm, "BadSpecError")
                )
                raise ApplicationError(failure, type=error_type, non_retryable=True)
            if diverged := self.diverge.get(spec.trial_id, self.diverge.get(spec.arm)):
                return TrialResult(
                    campaign_id=spec.campaign_id,
                    trial_id=spec.trial_id,
                    state="diverged",
                    error=diverged,
                    device_hours=self.trial_seconds / HOUR,
                )
            if spec.search is not None and spec.search.number in self.prune:
                return TrialResult(
                    campaign_id=spec.campaign_id,
                    trial_id=spec.trial_id,
                    state="pruned",
                    error="successive halving: stop",
                    device_hours=self.trial_seconds / HOUR / 2,
                    epoch_values=[ne_of(spec, self.ne, self.tuned_ne) + 0.05],
                )
            if self.block_until_cancelled:
                while True:  # a long job: heartbeats until the campaign cancels it
                    activity.heartbeat()
                    await asyncio.sleep(0.1)
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
            try:
                await asyncio.sleep(self.hold_s)
            finally:
                self.in_flight -= 1
            return self.result(spec.campaign_id, spec.trial_id)

        return [train_trial]

    def result(self, campaign_id: str, trial_id: str) -> TrialResult:
        """The result the fake trainer reports for a trial (its test NE is 0.01 higher)."""
        spec = self.specs[trial_id]
        # A screening rung trains on a fraction of the data: it costs that much (and a tenth).
        cost = 1.0 if spec.data_fraction >= 1 else 0.1 + 0.9 * spec.data_fraction
        cost *= self.cost_on_test if spec.phase == "confirmation" else 1.0
        cost *= self.tuned_cost if is_tuned(spec.arm) else 1.0
        cost *= self.slow
        for part in arm_hypotheses(spec.arm or "", set()):
            cost *= self.arm_cost.get(f"v-{part}", 1.0)
        ne = ne_of(spec, self.ne, self.tuned_ne)
        return result_of(campaign_id, trial_id, ne, self.trial_seconds / HOUR * cost)

    def jobs(self) -> list[Callable[..., object]]:
        @activity.defn(name="launch_job")
        def launch_job(inp: LaunchJobInput) -> JobHandle:
            self.specs[inp.spec.trial_id] = inp.spec
            handle = JobHandle(
                runner=self.runner,
                job_id=f"{inp.spec.trial_id}/{inp.attempt}",
                trial_id=inp.spec.trial_id,
                attempt=inp.attempt,
            )
            self.launched.append(handle)
            if self.launch_gate is not None:
                self.launch_gate.wait(timeout=30)
            return handle

        @activity.defn(name="poll_job")
        def poll_job(job: JobHandle) -> JobStatus:
            self.polls += 1
            return JobStatus(state=self.job_states.get((job.trial_id, job.attempt), "running"))

        @activity.defn(name="stop_job")
        def stop_job(job: JobHandle) -> JobStatus:
            self.stopped.append(job.trial_id)
            return JobStatus(state="cancelled")

        @activity.defn(name="settle_job")
        def settle_job(job: JobHandle) -> JobStatus:
            if (job.trial_id, job.attempt) in self.settled:
                return self.settled[(job.trial_id, job.attempt)]
            result = self.result(self.specs[job.trial_id].campaign_id, job.trial_id)
            charged = result.model_copy(update={"device_hours": self.settled_hours})
            return JobStatus.ended(charged).model_copy(update={"device_hours": self.settled_hours})

        return [launch_job, poll_job, settle_job, stop_job]
