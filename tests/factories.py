"""Builders shared by the tests."""

from typing import Any

from contracts import (
    Budget,
    CampaignRequest,
    DatasetRef,
    Metrics,
    ModelSpec,
    TrialResult,
    TrialSpec,
)

APPROVER = "alice@example.com"


def campaign_request(**overrides: Any) -> CampaignRequest:
    """A small valid request; keyword arguments replace its fields."""
    fields: dict[str, Any] = {
        "goal": "test campaign",
        "baseline": ModelSpec(epochs=1),
        "dataset": DatasetRef(max_rows=3000),
        "budget": Budget(device_hours=100.0, max_parallel_trials=2),
        "approvers": [APPROVER, "bob@example.com"],
        # The workflow tests of the older protocol's steps; tests/workflows/test_multi_fidelity.py
        # runs the default one.
        "protocol": "evidence",
    }
    fields.update(overrides)
    return CampaignRequest(**fields)


def metrics(ne: float, examples: int = 100) -> Metrics:
    return Metrics(ne=ne, auc=1.0 - ne / 2, logloss=ne * 0.6, examples=examples)


def succeeded(spec: TrialSpec, ne: float, device_hours: float = 0.01) -> TrialResult:
    return result_of(spec.campaign_id, spec.trial_id, ne, device_hours)


def result_of(campaign_id: str, trial_id: str, ne: float, device_hours: float) -> TrialResult:
    """A succeeded trial's result with validation NE ``ne``."""
    return TrialResult(
        campaign_id=campaign_id,
        trial_id=trial_id,
        state="succeeded",
        validation=metrics(ne),
        test=metrics(ne + 0.01),
        duration_s=device_hours * 3600,
        device_hours=device_hours,
        steps=10,
    )
