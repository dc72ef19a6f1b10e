"""Boundary validation of the public contracts: errors name the field and the fix."""

import pytest
from pydantic import ValidationError

from contracts import Budget, CampaignRequest, ModelSpec, describe


def request(**fields: object) -> CampaignRequest:
    return CampaignRequest.model_validate(
        {"budget": {"device_hours": 1.0}, "approvers": ["alice"]} | fields
    )


def test_unknown_fields_are_rejected_by_name() -> None:
    with pytest.raises(ValidationError, match="embeding_dim"):
        request(baseline={"embeding_dim": 32})


def test_multi_device_trials_need_the_job_runner() -> None:
    with pytest.raises(ValidationError, match="execution 'job'"):
        request(devices_per_trial=2)
    assert request(devices_per_trial=2, execution="job").devices_per_trial == 2
    # The first name of execution "job", still accepted for the requests written with it.
    assert request(devices_per_trial=2, execution="local-process").devices_per_trial == 2


def test_approvers_must_be_named() -> None:
    with pytest.raises(ValidationError, match="approver"):
        request(approvers=[" "])
    with pytest.raises(ValidationError, match="approvers"):
        request(approvers=[])


def test_budget_must_be_positive() -> None:
    with pytest.raises(ValidationError, match="device_hours"):
        Budget(device_hours=0)


def test_a_change_of_per_feature_overrides_is_described_in_words() -> None:
    change, _ = describe(ModelSpec(), {"table_rows": {"item_id": 512}})
    assert change == 'table_rows → {"item_id": 512}'
