"""Result storage (idempotent by campaign and trial) and the planner."""

from pathlib import Path

import pytest
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.planning import PlanningActivities, make_plan
from activities.results import ResultActivities, SqliteTrialStore
from contracts import DatasetRef, ModelSpec, PlanningInput, TrialRecord, TrialSpec
from ranking_models.cost import estimate_seconds_range
from tests.factories import campaign_request, succeeded


def spec(trial_id: str) -> TrialSpec:
    request = campaign_request()
    return TrialSpec(
        campaign_id="c1",
        trial_id=trial_id,
        phase="validation",
        model=request.baseline,
        dataset=request.dataset,
    )


def test_record_trial_is_idempotent_and_survives_reopening(tmp_path: Path) -> None:
    path = tmp_path / "results.sqlite"
    store = SqliteTrialStore(path)
    record = ResultActivities(store).record_trial
    env = ActivityEnvironment()
    first = TrialRecord(spec=spec("a"), result=succeeded(spec("a"), 0.9))
    env.run(record, first)
    env.run(record, first)  # a retried activity
    env.run(record, TrialRecord(spec=spec("b"), result=succeeded(spec("b"), 0.8)))
    store.close()

    stored = SqliteTrialStore(path).list("c1")
    assert [r.spec.trial_id for r in stored] == ["a", "b"]
    assert stored[0] == first


def test_plan_keeps_hypotheses_inside_the_action_space() -> None:
    # embedding_dim 512 is the cap: doubling it is not a valid spec, so it is not proposed.
    request = campaign_request(baseline=ModelSpec(embedding_dim=512))
    plan = make_plan(PlanningInput(campaign_id="c1", request=request), lambda m, d: (36.0, 36.0))

    ids = [h.id for h in plan.hypotheses]
    assert "wider-embeddings" not in ids and len(ids) == 5
    for hypothesis in plan.hypotheses:
        request.baseline.with_changes(hypothesis.changes)  # raises if invalid
    assert plan.estimated_device_hours_per_trial == 0.01
    validation, combination = plan.phases
    assert validation.trials == 6 and combination.trials == 2
    assert plan.estimated_device_hours == pytest.approx(0.08)


def test_plan_respects_the_trial_cap() -> None:
    request = campaign_request()
    request = request.model_copy(
        update={"budget": request.budget.model_copy(update={"max_trials": 3})}
    )
    plan = ActivityEnvironment().run(
        PlanningActivities(lambda m, d: (3600.0, 3600.0)).plan_campaign,
        PlanningInput(campaign_id="c1", request=request),
    )
    assert len(plan.hypotheses) == 2
    assert [p.trials for p in plan.phases] == [3, 0]


def test_plan_says_when_a_phase_may_run_fewer_trials_and_shows_a_range() -> None:
    plan = make_plan(
        PlanningInput(campaign_id="c1", request=campaign_request()), lambda m, d: (36.0, 72.0)
    )
    validation, combination = plan.phases
    assert not validation.condition
    assert "beat the baseline" in combination.condition
    assert plan.estimated_device_hours_high == pytest.approx(2 * plan.estimated_device_hours)


@pytest.mark.parametrize(
    ("request_changes", "error_type", "named"),
    [
        ({"dataset": DatasetRef(path="/nonexistent/ml-100k")}, "BadDataError", "/nonexistent"),
        (
            {
                "baseline": ModelSpec(
                    max_table_rows=100_000_000,
                    table_rows={"user_id": 100_000_000},
                    embedding_dim=512,
                )
            },
            "OutOfMemoryError",
            "table_rows",
        ),
    ],
)
def test_planning_errors_no_retry_can_fix_are_non_retryable(
    request_changes: dict[str, object], error_type: str, named: str
) -> None:
    """With the real estimator: a missing dataset or a model too big for this host."""
    planning = PlanningActivities(estimate_seconds_range)
    with pytest.raises(ApplicationError) as raised:
        ActivityEnvironment().run(
            planning.plan_campaign,
            PlanningInput(campaign_id="c1", request=campaign_request(**request_changes)),
        )
    assert raised.value.non_retryable
    assert raised.value.type == error_type
    assert named in str(raised.value)
