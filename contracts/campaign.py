"""A campaign: the request, its plan, approval, status and result."""

from datetime import datetime
from typing import Any, Literal

from pydantic import Field, field_validator

from contracts.base import Record, Spec
from contracts.dataset import DatasetRef
from contracts.model import Metric, ModelSpec
from contracts.trial import Phase, TrialResult, TrialSpec

CampaignPhase = Literal[
    "planning", "awaiting_approval", "validation", "combination", "done", "stopped"
]


class Budget(Spec):
    """The compute an engineer is asked to approve.

    Attributes:
        device_hours: Accelerator-hours (GPU-hours on GPU hosts, CPU-hours here) the
            campaign may spend, counting every trial's wall time times its devices.
        max_parallel_trials: Trials running at once.
        max_trials: Trials in all, baseline included.
    """

    device_hours: float = Field(gt=0.0)
    max_parallel_trials: int = Field(default=2, ge=1, le=64)
    max_trials: int = Field(default=12, ge=1, le=10_000)


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
        approvers: Who may approve the plan (e.g. Slack handles or emails).
    """

    goal: str = Field(default="", max_length=500)
    baseline: ModelSpec = Field(default_factory=ModelSpec)
    dataset: DatasetRef = Field(default_factory=DatasetRef)
    metric: Metric = "ne"
    budget: Budget
    approvers: list[str] = Field(min_length=1)

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
        source: Where it came from (``fixed-mutation`` until the research agent lands).
        changes: ``ModelSpec`` fields to override, e.g. ``{"embedding_dim": 32}``.
    """

    id: str
    title: str
    rationale: str = ""
    source: str = "fixed-mutation"
    changes: dict[str, Any]


class PhasePlan(Record):
    """How many trials a phase runs and what they are estimated to cost."""

    phase: Phase
    trials: int
    estimated_device_hours: float


class Plan(Record):
    """The plan an engineer approves: hypotheses and cost per phase."""

    hypotheses: list[Hypothesis]
    phases: list[PhasePlan]
    estimated_device_hours_per_trial: float

    @property
    def estimated_device_hours(self) -> float:
        return sum(p.estimated_device_hours for p in self.phases)


class PlanningInput(Spec):
    """Input of the planning activity."""

    campaign_id: str
    request: CampaignRequest


class ApproveInput(Spec):
    """The ``approve`` update: an engineer approves the pending plan.

    Attributes:
        approver: Must be one of the request's approvers.
        comment: Kept in the campaign's history.
    """

    approver: str = Field(min_length=1)
    comment: str = ""


class ControlInput(Spec):
    """The ``pause``, ``resume`` and ``stop`` signals: who asked, and why."""

    by: str = ""
    reason: str = ""


class Approval(Record):
    """The recorded approval: who, when and what budget."""

    approver: str
    comment: str = ""
    approved_at: datetime
    device_hours: float


class TrialRecord(Record):
    """A trial as the campaign remembers it."""

    spec: TrialSpec
    result: TrialResult | None = None


class CampaignStatus(Record):
    """The answer to the ``status`` query and the body of the final result.

    Attributes:
        phase: Where the campaign is.
        paused: True while an engineer has paused launching new trials.
        plan: The plan, once made.
        approval: The approval, once given.
        trials: Every trial launched so far, in launch order.
        best_trial_id: The trial with the best validation metric so far.
        device_hours_spent: Actual cost of finished trials.
        message: The last thing worth telling a person.
    """

    campaign_id: str
    goal: str = ""
    metric: Metric = "ne"
    phase: CampaignPhase = "planning"
    paused: bool = False
    plan: Plan | None = None
    approval: Approval | None = None
    trials: list[TrialRecord] = Field(default_factory=list)
    best_trial_id: str = ""
    best_metric: float | None = None
    baseline_metric: float | None = None
    device_hours_spent: float = 0.0
    device_hours_approved: float = 0.0
    message: str = ""


class CampaignResult(Record):
    """What a finished (or stopped) campaign returns."""

    status: CampaignStatus
    best_model: ModelSpec | None = None
    improvement: float | None = Field(
        default=None,
        description="Relative improvement of the metric over the baseline (positive is better).",
    )
