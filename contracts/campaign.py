"""A campaign: the request, its plan, approval, status and result."""

import json
from datetime import datetime
from typing import Any, Literal

from pydantic import Field, computed_field, field_validator, model_validator

from contracts.base import Record, Spec
from contracts.control import IgnoredSignal
from contracts.dataset import DatasetRef
from contracts.evidence import Additivity, GateDecision, LaunchProposal, ScreenDecision
from contracts.exploration import ExplorationPlan, RungDecision
from contracts.ledger import Ledger
from contracts.metrics import Metric
from contracts.model import ModelSpec
from contracts.preflight import AccessScope, PreflightReport
from contracts.provenance import Provenance
from contracts.runbook import Escalation, RemedyAttempt
from contracts.search import Sampler
from contracts.task import TaskDescriptor
from contracts.trial import Phase, TrialResult, TrialSpec
from contracts.trial_summary import TrialSummary

# "failed": planning hit an error no retry can fix (bad data, a spec that cannot be built or
# cannot fit in memory); the campaign ends and says which field to fix.
CampaignPhase = Literal[
    "planning",
    "awaiting_approval",
    "validation",
    "combination",
    "exploitation",
    "confirmation",
    "done",
    "stopped",
    "failed",
]
# How a campaign decides. "multi-fidelity": a successive-halving screen over a broad pool, a
# whole-space search around the leader, gates whose seeds grow only where they decide, and
# a confirmation of the best few on the test split; its size follows the approved budget.
# "evidence": the fixed-size seeded, paired and gated phases of the versions before, ending
# in a launch proposal confirmed on the test split. "single-seed": the first versions'
# best-of-one-run. The older two are kept so that the campaigns they started replay and
# finish as they began.
Protocol = Literal["single-seed", "evidence", "multi-fidelity"]
# in-worker: a training worker runs the trial as a heartbeating activity.
# job: the trial runs as its own job, holding no worker, on the jobs worker's backend (a
# local process, or a Slurm batch job: REA_JOB_BACKEND); it signals the campaign when done,
# and a slow poll notices a job that died silently. local-process: the same, its first name.
Execution = Literal["in-worker", "job", "local-process"]


class Budget(Spec):
    """The compute an engineer is asked to approve.

    Attributes:
        device_hours: Accelerator-hours (GPU-hours on GPU hosts, CPU-hours here) the
            campaign may spend, counting every trial's wall time times its devices.
        max_parallel_trials: Trials running at once.
        max_trials: Trials in all, baseline included.
        max_wall_hours: After this long since approval the campaign stops its running
            trials and reports what it has.
        on_exhausted: When spending reaches the budget: let running trials finish, or stop
            them at once (they checkpoint, so an extension can resume them).
        extension_wait_hours: How long an exhausted campaign waits for an engineer to
            extend the budget before it reports what it has.
    """

    device_hours: float = Field(gt=0.0)
    max_parallel_trials: int = Field(default=2, ge=1, le=64)
    max_trials: int = Field(default=200, ge=1, le=10_000)
    max_wall_hours: float = Field(default=24.0 * 28, gt=0.0)
    on_exhausted: Literal["finish-running", "stop-running"] = "finish-running"
    extension_wait_hours: float = Field(default=72.0, ge=0.0)


class CampaignRequest(Spec):
    """What an engineer asks for: improve ``metric`` of ``baseline`` on ``dataset``.

    This is the workflow input; clients in any language send it as JSON (see
    ``schema/CampaignRequest.json``).

    Attributes:
        goal: One line in the engineer's words, shown in the plan and the Web UI.
        baseline: The production model to improve.
        dataset: The data to train and evaluate on.
        metric: The validation metric to improve.
        budget: The compute asked for.
        approvers: Who may approve the plan (e.g. Slack handles or emails); they may also
            pause, resume and stop the campaign.
        operators: Who may pause, resume and stop the campaign besides its approvers (an
            on-call rota), without approving plans or budgets.
        execution: Where trials run (see ``Execution``).
        heartbeat_timeout_s: How long an in-worker trainer may be silent before it is
            presumed dead and its trial retried (from its last checkpoint) elsewhere.
        devices_per_trial: Devices each trial trains on (multi-device trials run as
            jobs through torchrun).
        seeds: Seeds per arm wherever evidence is weighed: the baseline and every promoted
            hypothesis run with this many seeds, paired by seed, and the final confirmation
            uses this many fresh ones. Seed noise cannot be measured with fewer than 2.
        alpha: Family-wise error rate of each gate (Holm-corrected over the hypotheses it
            tests together).
        min_effect: Smallest relative gain worth launching, e.g. 0.002 for 0.2% NE.
        exploitation_trials: Optuna trials tuning the best candidate (0: no exploitation).
        sampler: Optuna sampler of exploitation: ``tpe`` or ``cmaes`` (or ``random``).
        max_hypotheses: Most hypotheses the plan validates (fewer when the budget is tight).
        access: What the campaign's activities may read and write (the preflight checklist
            shows it; training and job launches refuse anything outside it).
        escalation_wait_hours: How long an escalated trial waits for an engineer's answer;
            then it is skipped (left failed) and the campaign goes on without it.
        protocol: How the campaign decides (see ``Protocol``): ``multi-fidelity`` (the
            default), or ``evidence``, the fixed-size protocol of the versions before.
        exploration_share: The share of the budget for exploration (the screen and the
            whole-space search); the rest buys evidence (multi-fidelity campaigns).
        max_seeds: Seeds per arm a gate may grow to while a candidate's interval straddles
            the minimum effect (multi-fidelity campaigns).
        max_size_ratio: Serving constraint: a launch may have at most this many times the
            baseline's parameters, embeddings included (None: unconstrained, and the size
            is reported as a risk).
    """

    goal: str = Field(default="", max_length=500)
    baseline: ModelSpec = Field(default_factory=ModelSpec)
    dataset: DatasetRef = Field(default_factory=DatasetRef)
    metric: Metric = "ne"
    budget: Budget
    approvers: list[str] = Field(min_length=1)
    operators: list[str] = Field(default_factory=list)
    execution: Execution = "in-worker"
    heartbeat_timeout_s: float = Field(default=120.0, ge=5.0, le=86_400.0)
    devices_per_trial: int = Field(default=1, ge=1, le=64)
    seeds: int = Field(default=3, ge=2, le=32)
    alpha: float = Field(default=0.05, gt=0.0, lt=0.5)
    min_effect: float = Field(default=0.0, ge=0.0, lt=1.0)
    exploitation_trials: int = Field(default=6, ge=0, le=1000)
    sampler: Sampler = "tpe"
    max_hypotheses: int = Field(default=6, ge=1, le=1000)
    access: AccessScope = Field(default_factory=AccessScope)
    escalation_wait_hours: float = Field(default=72.0, ge=0.0)
    protocol: Literal["evidence", "multi-fidelity"] = "multi-fidelity"
    exploration_share: float = Field(default=0.6, gt=0.0, lt=1.0)
    max_seeds: int = Field(default=8, ge=2, le=64)
    max_size_ratio: float | None = Field(default=None, gt=0.0)

    @model_validator(mode="after")
    def _multi_device_runs_as_jobs(self) -> "CampaignRequest":
        if self.devices_per_trial > 1 and self.execution == "in-worker":
            raise ValueError("devices_per_trial > 1 needs execution 'job' (trials launch torchrun)")
        return self

    @field_validator("approvers")
    @classmethod
    def _approvers_named(cls, approvers: list[str]) -> list[str]:
        if any(not a.strip() for a in approvers):
            raise ValueError("every approver needs a non-empty name")
        return approvers


class Hypothesis(Record):
    """A change to the baseline that might improve the metric.

    Attributes:
        id: Short stable id, e.g. ``wider-embeddings``.
        title: One line for people.
        rationale: Why it might help.
        source: Where it came from (see ``contracts.provenance.Source``).
        changes: ``ModelSpec`` fields to override, e.g. ``{"embedding_dim": 32}``.
        provenance: Who proposed it and on what grounds (None for plans made before the
            research agents).
        expected_gain: The source's expected relative gain of the metric (positive is
            better), after what history says.
        cost_factor: Expected cost of its trials relative to the baseline's.
        family: The action-space families it touches, joined with ``+``.
    """

    id: str
    title: str
    rationale: str = ""
    source: str = "fixed-mutation"
    changes: dict[str, Any]
    provenance: Provenance | None = None
    expected_gain: float = 0.0
    cost_factor: float = Field(default=1.0, gt=0.0)
    family: str = ""

    @property
    def families(self) -> list[str]:
        """The action-space families it touches (``family`` split at ``+``)."""
        return [f for f in self.family.split("+") if f]


def canonical(changes: dict[str, Any]) -> str:
    """One string per move, whatever order its fields came in (for de-duplication)."""
    return json.dumps(changes, sort_keys=True)


class PhasePlan(Record):
    """How many trials a phase runs and what they are estimated to cost.

    Attributes:
        trials: Trials the phase runs (at most, when ``condition`` is set).
        estimated_device_hours: Their estimated cost, from the typical trial estimate.
        condition: When the phase may run fewer trials than ``trials``, and why.
    """

    phase: Phase
    trials: int
    estimated_device_hours: float
    condition: str = ""


class Plan(Record):
    """The plan an engineer approves: hypotheses and cost per phase.

    Attributes:
        estimated_device_hours_per_trial: The typical cost of one trial, calibrated on this
            host's unloaded speed; trials reserve it in the ledger.
        estimated_device_hours_per_trial_high: The high end of the estimate's range (what a
            trial costs when the host is busy); 0 for plans made before ranges existed.
        held_back: Proposals ranked below the ones planned (the budget or the plan's size
            left them out); an engineer may pin them in.
        pinned: Hypotheses an engineer pinned: kept whatever their rank.
        kept_down_to: Per planned hypothesis, the smallest budget (device-hours) at which
            the plan still includes it: what a cut budget drops first.
        notes: What the planner wants a person to know (a source that failed, revisions).
        budget_device_hours: The budget a revision planned for; approval grants it unless
            the approver names other hours (None: the request's budget).
        compute_target: Where the estimate assumes trials run (a Slurm partition, the
            training workers); empty for plans made before it was said.
        exploration: How a multi-fidelity campaign spends its budget (None for the older
            protocols).
    """

    hypotheses: list[Hypothesis]
    phases: list[PhasePlan]
    estimated_device_hours_per_trial: float
    estimated_device_hours_per_trial_high: float = 0.0
    held_back: list[Hypothesis] = Field(default_factory=list)
    pinned: list[str] = Field(default_factory=list)
    kept_down_to: dict[str, float] = Field(default_factory=dict)
    notes: list[str] = Field(default_factory=list)
    budget_device_hours: float | None = None
    compute_target: str = ""
    exploration: ExplorationPlan | None = None

    @property
    def estimated_device_hours(self) -> float:
        return sum(p.estimated_device_hours for p in self.phases)

    @property
    def estimated_device_hours_high(self) -> float:
        """The high end of the plan's estimate (equal to the estimate without a range)."""
        per_trial = self.estimated_device_hours_per_trial
        high = max(self.estimated_device_hours_per_trial_high, per_trial)
        return self.estimated_device_hours * (high / per_trial if per_trial > 0 else 1.0)

    @property
    def cost_to_fit(self) -> float:
        """The estimate a budget must cover: a multi-fidelity plan's typical one (it sizes its
        search to what trials cost as it goes and stops within the budget), a fixed-size
        plan's high end."""
        return self.estimated_device_hours if self.exploration else self.estimated_device_hours_high

    def fits(self, device_hours: float) -> bool:
        return self.cost_to_fit <= device_hours * (1 + 1e-9)

    @property
    def trials(self) -> int:
        """Trials planned across phases (an upper bound where a phase has a condition)."""
        return sum(p.trials for p in self.phases)


class PlanningInput(Spec):
    """Input of the planning activity."""

    campaign_id: str
    request: CampaignRequest


class PreflightInput(Spec):
    """Input of the preflight activity: the request and the plan to check before approval."""

    campaign_id: str
    request: CampaignRequest
    plan: Plan


class ApproveInput(Spec):
    """The ``approve`` update: an engineer approves the pending plan.

    Attributes:
        approver: Must be one of the request's approvers.
        comment: Kept in the campaign's history.
        device_hours: The budget approved, when it differs from the one requested.
        override_preflight: Approve although preflight items fail; the reason (required to
            override) is kept in the history with the approval.
    """

    approver: str = Field(min_length=1)
    comment: str = ""
    device_hours: float | None = Field(default=None, gt=0.0)
    override_preflight: str = ""


class RevisePlanInput(Spec):
    """The ``revise_plan`` update: an approver changes the pending plan before approving it.

    Attributes:
        approver: Must be one of the request's approvers.
        drop: Hypothesis ids to leave out.
        pin: Hypothesis ids to keep whatever their rank (planned or held back ones).
        device_hours: The budget to plan for, when it changes.
        comment: Kept in the plan's notes.
    """

    approver: str = Field(min_length=1)
    drop: list[str] = Field(default_factory=list)
    pin: list[str] = Field(default_factory=list)
    device_hours: float | None = Field(default=None, gt=0.0)
    comment: str = ""

    @model_validator(mode="after")
    def _not_both(self) -> "RevisePlanInput":
        if both := sorted(set(self.drop) & set(self.pin)):
            raise ValueError(f"drop and pin: {both} cannot be dropped and pinned at once")
        return self


class ExtendBudgetInput(Spec):
    """The ``extend_budget`` update: an approver adds device-hours to the approved budget."""

    approver: str = Field(min_length=1)
    device_hours: float = Field(gt=0.0)
    comment: str = ""


class ControlInput(Spec):
    """The ``pause``, ``resume`` and ``stop`` updates (and their signals): who asks, and why.

    Attributes:
        by: Who asks; must be one of the request's approvers or operators (required by the
            updates; a signal without it is ignored, the reason kept in the status).
        reason: Why; kept in the campaign's message and history.
    """

    by: str = ""
    reason: str = ""


class Approval(Record):
    """The recorded approval: who, when and what budget."""

    approver: str
    comment: str = ""
    approved_at: datetime
    device_hours: float
    preflight_override: str = ""


class TrialRecord(Record):
    """A trial in full, as stored by the results store.

    Attributes:
        remedy: For a run a remedy made, what it was, e.g. ``host-oom: fp16_embeddings``.
    """

    spec: TrialSpec
    result: TrialResult | None = None
    remedy: str = ""


class CampaignStatus(Record):
    """The campaign's whole state: the ``status`` query's answer, the body of the final result,
    and what continue-as-new carries into the next run.

    Attributes:
        phase: Where the campaign is.
        paused: True while an engineer has paused launching new trials.
        plan: The plan, once made.
        approval: The approval, once given.
        trials: Every trial launched so far, in launch order.
        best_trial_id: The trial with the best validation metric so far.
        ledger: Approved budget, reserved and spent device-hours per phase.
        phase_notes: Why a phase ran fewer trials than planned, by phase.
        needs_attention: Why an engineer is needed now (empty when not).
        error: What ended a failed campaign and which field to fix (phase ``failed``).
        stop_reason: Why the campaign stops, once it does.
        message: The last thing worth telling a person.
        runs: Workflow runs so far (continue-as-new starts a new one).
        protocol: How this campaign decides (fixed when it starts; see ``Protocol``).
        screen: Validation's first rung: which hypotheses went on, and why.
        decisions: The gate's decision record of each phase that ran one, by phase.
        additivity: How each merge of combination did against the sum of its parts.
        tuned: The changes of each tuned arm (``x<number>``), as the study asked them.
        search_rounds: Exploitation rounds asked of the Optuna study so far.
        proposal: The launch proposal (or the honest absence of one), once confirmed.
        task: The task's descriptor as the planner measured it (for insights' transfer).
        planner: How the plan is made (fixed when the campaign starts). "dual-source": the
            knowledge and LLM agents propose, the plan can be revised, and the campaign is
            recorded in the insights database. "fixed": the first versions' fixed mutations.
        recovery: How failed trials are handled (fixed when the campaign starts).
            "runbook": a preflight checklist comes with the plan; failures are diagnosed
            against the runbooks and remedied, and what no remedy fixes escalates that
            trial to an engineer. "retry": the first versions' plain retries.
        preflight: The checklist run before approval (``recovery == "runbook"``).
        remedies: Every remedy applied to a failed trial, and how its run ended.
        escalations: Trials handed to an engineer, open (no resolution yet) or answered.
        ignored_signals: The last signals the campaign did not act on, and why.
        preflight_running: The preflight checklist is running (in the ``status`` query's
            answer; approval waits for it).
        rungs: The screen's rungs as decided (multi-fidelity campaigns).
        trials_archived: Finished trials dropped from ``trials`` to keep the state small
            (decided in ``rungs`` and ``decisions``; every trial is in the insights database).
        ended_by: The rule that ended the campaign, and what it left unspent.
        tuning: The validation value of the best (and the gated) trials of the whole-space
            search, by arm, on the screen's seed at full fidelity; the study keeps them all.
        spent_estimated: The estimates of the finished trials, summed: with the ledger's
            spend, how far actual costs run from the estimates.
        looks: Each look of a sequential gate, by ``<gate>#<seeds>`` (see ``decisions``).
        gate_seeds: The seeds per arm each sequential gate may grow to, by gate, as the
            budget left at its start afforded.
        arm_costs: What an arm's runs at full fidelity cost over their estimate, by arm: a
            gate costs a dear arm at what it measured, not at the ratio of its epochs.
    """

    campaign_id: str
    goal: str = ""
    metric: Metric = "ne"
    phase: CampaignPhase = "planning"
    paused: bool = False
    plan: Plan | None = None
    approval: Approval | None = None
    trials: list[TrialSummary] = Field(default_factory=list)
    best_trial_id: str = ""
    best_metric: float | None = None
    baseline_metric: float | None = None
    ledger: Ledger = Field(default_factory=Ledger)
    phase_notes: dict[str, str] = Field(default_factory=dict)
    needs_attention: str = ""
    error: str = ""
    stop_reason: str = ""
    message: str = ""
    runs: int = 1
    protocol: Protocol = "single-seed"
    screen: ScreenDecision | None = None
    decisions: dict[str, GateDecision] = Field(default_factory=dict)
    additivity: list[Additivity] = Field(default_factory=list)
    tuned: dict[str, dict[str, Any]] = Field(default_factory=dict)
    search_rounds: int = 0
    proposal: LaunchProposal | None = None
    task: TaskDescriptor | None = None
    planner: Literal["fixed", "dual-source"] = "fixed"
    recovery: Literal["retry", "runbook"] = "retry"
    preflight: PreflightReport | None = None
    remedies: list[RemedyAttempt] = Field(default_factory=list)
    escalations: list[Escalation] = Field(default_factory=list)
    ignored_signals: list[IgnoredSignal] = Field(default_factory=list)
    preflight_running: bool = False
    rungs: list[RungDecision] = Field(default_factory=list)
    trials_archived: int = 0
    ended_by: str = ""
    tuning: dict[str, float | None] = Field(default_factory=dict)
    spent_estimated: float = 0.0
    looks: dict[str, GateDecision] = Field(default_factory=dict)
    gate_seeds: dict[str, int] = Field(default_factory=dict)
    arm_costs: dict[str, float] = Field(default_factory=dict)

    @computed_field  # type: ignore[prop-decorator]
    @property
    def device_hours_spent(self) -> float:
        return self.ledger.spent

    @computed_field  # type: ignore[prop-decorator]
    @property
    def device_hours_approved(self) -> float:
        return self.ledger.approved

    def trial(self, trial_id: str) -> TrialSummary | None:
        return next((t for t in self.trials if t.trial_id == trial_id), None)

    @property
    def preflight_passed(self) -> bool:
        """No preflight checklist, or one where every item passed."""
        return self.preflight is None or self.preflight.passed

    @property
    def open_escalations(self) -> list[Escalation]:
        """Escalated trials still waiting for an engineer."""
        return [e for e in self.escalations if e.resolution is None]


class CampaignResult(Record):
    """What a finished (or stopped) campaign returns."""

    status: CampaignStatus
    best_model: ModelSpec | None = None
    improvement: float | None = Field(
        default=None,
        description="Relative improvement of the metric over the baseline (positive is better).",
    )
