"""The public, language-neutral vocabulary of openrea (stdlib + pydantic only)."""

from contracts.actions import DEFAULT_ACTION_SPACE, ActionSpace, Knob, KnobKind
from contracts.campaign import (
    Approval,
    ApproveInput,
    Budget,
    CampaignPhase,
    CampaignRequest,
    CampaignResult,
    CampaignStatus,
    ControlInput,
    Execution,
    ExtendBudgetInput,
    Hypothesis,
    PhasePlan,
    Plan,
    PlanningInput,
    TrialRecord,
    TrialSummary,
)
from contracts.dataset import DatasetRef
from contracts.evidence import (
    CandidateRuns,
    Comparison,
    GateDecision,
    GateInput,
    SeededMetric,
)
from contracts.job import JobFinishedInput, JobHandle, JobState, JobStatus, LaunchJobInput
from contracts.ledger import Ledger, PhaseLedger
from contracts.model import LOWER_IS_BETTER, Metric, ModelSpec
from contracts.trial import Metrics, Phase, TrialProgress, TrialResult, TrialSpec

__all__ = [
    "DEFAULT_ACTION_SPACE",
    "LOWER_IS_BETTER",
    "ActionSpace",
    "Approval",
    "ApproveInput",
    "Budget",
    "CampaignPhase",
    "CampaignRequest",
    "CampaignResult",
    "CampaignStatus",
    "CandidateRuns",
    "Comparison",
    "ControlInput",
    "DatasetRef",
    "Execution",
    "ExtendBudgetInput",
    "GateDecision",
    "GateInput",
    "Hypothesis",
    "JobFinishedInput",
    "JobHandle",
    "JobState",
    "JobStatus",
    "Knob",
    "KnobKind",
    "LaunchJobInput",
    "Ledger",
    "Metric",
    "Metrics",
    "ModelSpec",
    "Phase",
    "PhaseLedger",
    "PhasePlan",
    "Plan",
    "PlanningInput",
    "SeededMetric",
    "TrialProgress",
    "TrialRecord",
    "TrialResult",
    "TrialSpec",
    "TrialSummary",
]
