"""The campaign's pure decisions."""

import pytest
from pydantic import ValidationError

from activities.planning import make_plan
from contracts import (
    Budget,
    CampaignStatus,
    Ledger,
    ModelSpec,
    PlanningInput,
    TrialSummary,
    is_better,
    relative_gain,
)
from tests.factories import campaign_request, succeeded
from workflows import policy


def plan_and_request():
    request = campaign_request()
    return make_plan(
        PlanningInput(campaign_id="c", request=request), lambda m, d: (360.0, 360.0)
    ), request


def finished(specs, ne_by_id):
    return [
        TrialSummary(trial_id=s.trial_id, phase=s.phase, hypothesis_ids=s.hypothesis_ids).finished(
            succeeded(s, ne_by_id[s.trial_id])
        )
        for s in specs
    ]


def test_is_better_follows_the_metric_direction() -> None:
    assert is_better(0.8, 0.9, "ne") and not is_better(0.9, 0.8, "ne")
    assert is_better(0.8, 0.7, "auc") and not is_better(0.7, 0.8, "auc")
    assert is_better(1.0, None, "logloss")
    assert relative_gain(0.9, 1.0, "ne") == pytest.approx(0.1)
    assert relative_gain(0.8, 0.5, "auc") == pytest.approx(0.6)


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
    full = campaign_request(budget=Budget(device_hours=100.0, max_trials=6))
    assert policy.combination_trials("c", full, plan, finished(specs, ne)) == []


def test_best_trial_ignores_unfinished_trials_and_prefers_the_earliest_tie() -> None:
    plan, request = plan_and_request()
    specs = policy.validation_trials("c", request, plan)[:3]
    trials = finished(specs, dict(zip([s.trial_id for s in specs], [0.9, 0.8, 0.8], strict=True)))
    trials.append(TrialSummary(trial_id="x", phase="validation"))  # still running
    best = policy.best_trial(trials, "ne")
    assert best is not None and best.trial_id == specs[1].trial_id


def test_model_for_rebuilds_a_trial_spec_from_the_plan() -> None:
    plan, request = plan_and_request()
    combo = policy.combination_trials(
        "c",
        request,
        plan,
        finished(
            policy.validation_trials("c", request, plan),
            {"baseline": 0.9, "v-wider-embeddings": 0.8, "v-wider-over-arch": 0.85}
            | {f"v-{h.id}": 0.95 for h in plan.hypotheses[2:]},
        ),
    )[0]
    assert policy.model_for(request, plan, combo.hypothesis_ids) == combo.model


def test_ledger_counts_reserved_work_per_phase() -> None:
    ledger = Ledger(approved=3.0).change("validation", reserved=1.0, spent=1.0)
    assert policy.can_afford(1.0, ledger)
    ledger = ledger.change("combination", reserved=0.5)
    assert not policy.can_afford(1.0, ledger) and not policy.exhausted(ledger)
    ledger = ledger.change("validation", reserved=-1.0, spent=2.0)
    assert policy.exhausted(ledger) and ledger.spent == 3.0 and ledger.reserved == 0.5
    assert ledger.phases["validation"].spent == 3.0


def test_continue_as_new_when_suggested_or_after_enough_trials() -> None:
    assert policy.should_continue_as_new(True, 0)
    assert policy.should_continue_as_new(False, policy.MAX_TRIALS_PER_RUN)
    assert not policy.should_continue_as_new(False, policy.MAX_TRIALS_PER_RUN - 1)


def test_invalid_changes_name_the_field() -> None:
    with pytest.raises(ValidationError, match="embedding_dim"):
        ModelSpec().with_changes({"embedding_dim": 6})


@pytest.mark.parametrize(
    ("improving", "expected"),
    [
        ([], "0 of 2 planned trials: 0 hypotheses beat the baseline; merging needs two."),
        (["v-larger-batch"], "0 of 2 planned trials: 1 hypothesis beat the baseline; merging"),
        (["v-larger-batch", "v-lower-dense-lr"], "1 of 2 planned trials: 2 hypotheses beat"),
        (["v-larger-batch", "v-lower-dense-lr", "v-wider-embeddings"], ""),
    ],
)
def test_a_phase_that_runs_fewer_trials_than_planned_says_why(
    improving: list[str], expected: str
) -> None:
    plan, request = plan_and_request()
    specs = policy.validation_trials("c", request, plan)
    ne = {s.trial_id: (0.85 if s.trial_id in improving else 0.95) for s in specs}
    records = finished(specs, ne | {"baseline": 0.9})
    combos = policy.combination_trials("c", request, plan, records)

    note = policy.fewer_than_planned(request, plan, "combination", len(combos), records)

    assert note.startswith(expected) if expected else note == ""
    assert policy.fewer_than_planned(request, plan, "validation", len(specs), records) == ""


def test_one_line_summary_tells_the_story_of_a_paused_campaign() -> None:
    plan, request = plan_and_request()
    specs = policy.validation_trials("c", request, plan)
    trials = finished(
        specs[:3], {"baseline": 0.9, specs[1].trial_id: 0.88, specs[2].trial_id: 0.91}
    )
    status = CampaignStatus(
        campaign_id="c",
        phase="validation",
        paused=True,
        plan=plan,
        trials=trials,
        best_trial_id=specs[1].trial_id,
        best_metric=0.88,
        ledger=Ledger(approved=2.0).change("validation", spent=0.3),
    )

    line = policy.one_line_summary(status, running=1)

    assert line == (
        "validation (paused): 3 of 9 trials done, 1 running; 0.3 of 2 device-hours; "
        f"best NE 0.88 ({specs[1].trial_id})"
    )
    waiting = CampaignStatus(campaign_id="c", phase="awaiting_approval", plan=plan)
    assert policy.one_line_summary(waiting, running=0) == "awaiting_approval"
