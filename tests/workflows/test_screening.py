"""The multi-fidelity plan's sizing (pure): it stays within its budget wherever it can."""

import pytest

from contracts import Hypothesis, RungDecision
from contracts.insights import Proposals
from tests.factories import campaign_request
from workflows import arms, planner, screening


def proposals(per_trial: float, high: float, count: int = 30) -> list[Proposals]:
    hypotheses = [
        Hypothesis(id=f"h{i}", title=f"move {i}", source="knowledge", changes={"epochs": 2 + i})
        for i in range(count)
    ]
    return [
        Proposals(
            source="knowledge",
            hypotheses=hypotheses,
            estimated_device_hours_per_trial=per_trial,
            estimated_device_hours_per_trial_high=high,
        )
    ]


@pytest.mark.parametrize("trials_affordable", [24, 31, 60, 400])
def test_a_budget_above_the_least_campaign_gets_a_plan_within_it(trials_affordable: int) -> None:
    per_trial, high = 0.001, 0.0011
    budget = trials_affordable * per_trial
    request = campaign_request(protocol="multi-fidelity", budget={"device_hours": budget})
    plan = planner.build_screen_plan(request, proposals(per_trial, high))
    assert plan.exploration is not None
    assert plan.fits(budget), (plan.estimated_device_hours, budget)
    assert len(plan.hypotheses) >= screening.MIN_POOL
    # The evidence share pays for at least one candidate's gates and confirmation.
    least = screening.evidence_runs(1, 1, request.seeds, request.seeds) * per_trial
    assert plan.exploration.evidence_device_hours >= least * (1 - 1e-9)


def test_a_budget_below_the_least_campaign_is_over_it_and_says_so() -> None:
    per_trial = 0.001
    request = campaign_request(protocol="multi-fidelity", budget={"device_hours": 0.01})
    plan = planner.build_screen_plan(request, proposals(per_trial, per_trial))
    assert not plan.fits(0.01)
    assert plan.fits(plan.estimated_device_hours)


def test_a_screen_stopped_short_sends_what_beat_the_baseline_at_its_last_rung() -> None:
    rung = RungDecision(
        rung=0,
        data_fraction=0.4,
        seed=7,
        baseline=1.0,
        values={"a": 0.95, "b": 0.99, "c": 1.02, "d": None},
        promoted=["a", "b", "c"],
    )
    assert screening.beat_baseline(rung, "ne", most=3) == ["a", "b"]  # c lost to it
    assert screening.beat_baseline(rung, "ne", most=1) == ["a"]
    assert screening.beat_baseline(rung, "auc", most=3) == ["c"]  # higher is better


def test_rungs_follow_the_measured_share_a_data_fraction_does_not_shrink() -> None:
    # Unmeasured (plans made before it was): every rung, as before.
    assert screening.fractions(10_000) == pytest.approx([1 / 9, 1 / 3, 1.0])
    # Cheap fixed costs: the same three rungs.
    assert screening.fractions(10_000, 0.1) == pytest.approx([1 / 9, 1 / 3, 1.0])
    # At 40% fixed, 1/3 of the data costs 60% of a full run: that rung is left out.
    assert screening.fractions(10_000, 0.4) == pytest.approx([1 / 9, 1.0])
    # At 72% (the benchmark's small tasks), 1/9 costs 75%: one rung, on all of the data.
    assert screening.fractions(10_000, 0.72) == [1.0]


def test_a_tuned_trial_is_stopped_early_only_where_the_stop_saves_half_its_cost() -> None:
    # Two epochs at 40% fixed: stopping after the first costs 70% of the run. Never.
    assert arms.last_prunable_epoch(2, 0.4) == 0
    # Nothing fixed: after the first of two epochs the stop costs exactly half.
    assert arms.last_prunable_epoch(2, 0.0) == 1
    # Ten epochs at 10% fixed: after epoch 4 a stop costs 46%, after epoch 5, 55%.
    assert arms.last_prunable_epoch(10, 0.1) == 4
    # One epoch: there is no epoch before the last to stop after.
    assert arms.last_prunable_epoch(1, 0.0) == 0


def test_a_plan_with_dear_fixed_costs_screens_on_all_of_the_data_and_stays_in_budget() -> None:
    per_trial = 0.001
    budget = 60 * per_trial
    request = campaign_request(protocol="multi-fidelity", budget={"device_hours": budget})
    cheap = planner.build_screen_plan(request, proposals(per_trial, per_trial))
    measured = [
        p.model_copy(update={"fixed_cost_share": 0.72}) for p in proposals(per_trial, per_trial)
    ]
    dear = planner.build_screen_plan(request, measured)
    assert cheap.exploration is not None and dear.exploration is not None
    assert dear.exploration.fixed_cost_share == 0.72
    assert [r.data_fraction for r in dear.exploration.rungs] == [1.0]
    assert dear.fits(budget)
    # A first rung costed at 19% of a run (the old 10% fixed) screened more candidates
    # than its runs, at 75%, could pay for.
    assert len(dear.hypotheses) < len(cheap.hypotheses)
