"""The campaign's pure decisions."""

import pytest
from pydantic import ValidationError

from activities.planning import make_plan
from contracts import ModelSpec, PlanningInput, TrialRecord
from tests.factories import campaign_request, succeeded
from workflows import policy


def plan_and_request():
    request = campaign_request()
    return make_plan(PlanningInput(campaign_id="c", request=request), lambda m, d: 360.0), request


def finished(specs, ne_by_id):
    return [TrialRecord(spec=s, result=succeeded(s, ne_by_id[s.trial_id])) for s in specs]


def test_is_better_follows_the_metric_direction() -> None:
    assert policy.is_better(0.8, 0.9, "ne") and not policy.is_better(0.9, 0.8, "ne")
    assert policy.is_better(0.8, 0.7, "auc") and not policy.is_better(0.7, 0.8, "auc")
    assert policy.is_better(1.0, None, "logloss")
    assert policy.relative_improvement(0.9, 1.0, "ne") == pytest.approx(0.1)
    assert policy.relative_improvement(0.8, 0.5, "auc") == pytest.approx(0.6)


def test_validation_runs_baseline_and_each_hypothesis_once() -> None:
    plan, request = plan_and_request()
    specs = policy.validation_trials("c", request, plan)
    assert [s.trial_id for s in specs] == ["baseline"] + [f"v-{h.id}" for h in plan.hypotheses]
    assert specs[0].model == request.baseline and specs[0].phase == "baseline"
    assert specs[1].model == request.baseline.with_changes(plan.hypotheses[0].changes)


def test_combination_merges_improvers_best_first() -> None:
    plan, request = plan_and_request()
    specs = policy.validation_trials("c", request, plan)
    ne = {"baseline": 0.9} | {s.trial_id: 0.95 for s in specs[1:]}
    ne["v-lower-dense-lr"], ne["v-wider-embeddings"], ne["v-over-arch-dropout"] = 0.85, 0.88, 0.89
    records = finished(specs, ne)

    combos = policy.combination_trials("c", request, plan, records)

    assert [c.trial_id for c in combos] == [
        "c-lower-dense-lr+wider-embeddings+over-arch-dropout",
        "c-lower-dense-lr+wider-embeddings",
    ]
    assert combos[1].model.dense_lr == request.baseline.dense_lr / 3
    assert combos[1].model.embedding_dim == request.baseline.embedding_dim * 2


def test_no_combination_without_two_improvers_or_room() -> None:
    plan, request = plan_and_request()
    specs = policy.validation_trials("c", request, plan)
    ne = {"baseline": 0.9} | {s.trial_id: 0.95 for s in specs[1:]}
    ne["v-wider-embeddings"] = 0.8
    assert policy.combination_trials("c", request, plan, finished(specs, ne)) == []

    ne["v-wider-over-arch"] = 0.85
    full = request.model_copy(
        update={"budget": request.budget.model_copy(update={"max_trials": 6})}
    )
    assert policy.combination_trials("c", full, plan, finished(specs, ne)) == []


def test_best_record_ignores_failures_and_prefers_the_earliest_tie() -> None:
    plan, request = plan_and_request()
    specs = policy.validation_trials("c", request, plan)[:3]
    records = finished(
        specs, {specs[0].trial_id: 0.9, specs[1].trial_id: 0.8, specs[2].trial_id: 0.8}
    )
    records.append(TrialRecord(spec=specs[0].model_copy(update={"trial_id": "x"}), result=None))
    best = policy.best_record(records, "ne")
    assert best is not None and best.spec.trial_id == specs[1].trial_id


def test_budget_check_counts_reserved_work() -> None:
    assert policy.can_afford(1.0, spent=1.0, reserved=1.0, approved=3.0)
    assert not policy.can_afford(1.0, spent=1.0, reserved=1.5, approved=3.0)


def test_invalid_changes_name_the_field() -> None:
    with pytest.raises(ValidationError, match="embedding_dim"):
        ModelSpec().with_changes({"embedding_dim": 6})
