"""The public, language-neutral vocabulary of openrea (stdlib + pydantic only)."""

from contracts.campaign import (
    Approval,
    ApproveInput,
    Budget,
    CampaignPhase,
    CampaignRequest,
    CampaignResult,
    CampaignStatus,
    ControlInput,
    Hypothesis,
    PhasePlan,
    Plan,
    PlanningInput,
    TrialRecord,
)
from contracts.dataset import DatasetRef
from contracts.model import LOWER_IS_BETTER, Metric, ModelSpec
from contracts.trial import Metrics, Phase, TrialProgress, TrialResult, TrialSpec

__all__ = [
    "LOWER_IS_BETTER",
    "Approval",
    "ApproveInput",
    "Budget",
    "CampaignPhase",
    "CampaignRequest",
    "CampaignResult",
    "CampaignStatus",
    "ControlInput",
    "DatasetRef",
    "Hypothesis",
    "Metric",
    "Metrics",
    "ModelSpec",
    "Phase",
    "PhasePlan",
    "Plan",
    "PlanningInput",
    "TrialProgress",
    "TrialRecord",
    "TrialResult",
    "TrialSpec",
]
