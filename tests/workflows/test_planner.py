"""The planner's pure decisions: merge, rank with diversity, fit the budget, revise."""

import pytest

from contracts import Budget, Hypothesis, Proposals, Provenance, RevisePlanInput, canonical
from tests.factories import campaign_request
from workflows import phases, planner


def hyp(
    hid: str, gain: float, family: str, source: str = "knowledge", **changes: object
) -> Hypothesis:
    return Hypothesis(
        id=hid,
        title=hid,
        changes=changes or {"dropout": round(0.01 * (1 + len(hid)), 3)},
        source=source,
        provenance=Provenance(source=source),  # type: ignore[arg-type]
        expected_gain=gain,
        family=family,
    )


def proposals(*hs: Hypothesis, source: str = "knowledge", per_trial: float = 0.0) -> Proposals:
    return Proposals(
        source=source,  # type: ignore[arg-type]
        hypotheses=list(hs),
        estimated_device_hours_per_trial=per_trial,
        estimated_device_hours_per_trial_high=per_trial * 1.5,
    )


KNOWLEDGE = proposals(
    hyp("dcn", 0.006, "interaction", interaction="dcn"),
    hyp("dcn-low-rank", 0.005, "interaction", interaction="dcn", dcn_low_rank=16),
    hyp("wider", 0.004, "embedding", embedding_dim=32),
    hyp("lr-down", 0.003, "dense-optimizer", dense_lr=0.0003),
    hyp("warmup", 0.002, "schedule", lr_warmup_steps=100),
    hyp("bad", -0.004, "regularisation", dropout=0.4),
    per_trial=0.01,
)
LLM = proposals(hyp("llm-ln", 0.001, "normalisation", "llm", dense_norm="layer"), source="llm")


def test_duplicates_merge_keeping_the_better_expectation_and_ids_stay_unique() -> None:
    same_move = hyp("llm-dcn", 0.009, "interaction", "llm", interaction="dcn")
    clash = hyp("wider", 0.001, "embedding", "llm", embedding_dim=64)
    merged = planner.merge([KNOWLEDGE, proposals(same_move, clash, source="llm")])
    by_changes = {canonical(h.changes): h for h in merged}
    assert by_changes[canonical({"interaction": "dcn"})].id == "llm-dcn"
    assert len({h.id for h in merged}) == len(merged) == 7
    assert "wider-2" in {h.id for h in merged}


def test_ranking_gives_each_source_a_place_then_favours_new_families() -> None:
    ranked = [h.id for h in planner.rank(planner.merge([KNOWLEDGE, LLM]))]
    assert ranked[:2] == ["dcn", "llm-ln"]  # the best of each source first
    # dcn-low-rank (0.005, a second interaction change) is halved below wider (0.004).
    assert ranked.index("wider") < ranked.index("dcn-low-rank")
    assert ranked[-1] == "bad"


def test_the_plan_fits_the_budget_and_says_what_a_cut_drops() -> None:
    roomy = planner.build_plan(campaign_request(max_hypotheses=6), [KNOWLEDGE, LLM])
    assert len(roomy.hypotheses) == 6 and [h.id for h in roomy.held_back] == ["bad"]
    assert roomy.estimated_device_hours <= 100.0
    kept = [roomy.kept_down_to[h.id] for h in roomy.hypotheses]
    assert kept == sorted(kept) and kept[-1] == pytest.approx(roomy.estimated_device_hours)
    assert any("llm" in n and "knowledge" in n for n in roomy.notes)

    # A budget between the 3- and 4-hypothesis plans keeps three.
    budget = (kept[2] + kept[3]) / 2
    tight = planner.build_plan(
        campaign_request(budget=Budget(device_hours=budget)), [KNOWLEDGE, LLM]
    )
    assert [h.id for h in tight.hypotheses] == [h.id for h in roomy.hypotheses[:3]]
    assert tight.estimated_device_hours <= budget


def test_a_budget_below_any_plan_still_tests_two() -> None:
    plan = planner.build_plan(campaign_request(budget=Budget(device_hours=1e-6)), [KNOWLEDGE, LLM])
    assert len(plan.hypotheses) == 2 and plan.estimated_device_hours > 1e-6


def test_revision_drops_pins_and_replans_for_its_budget() -> None:
    request = campaign_request(max_hypotheses=3)
    plan = planner.build_plan(request, [KNOWLEDGE, LLM])
    assert "bad" not in [h.id for h in plan.hypotheses]
    revised = planner.revise(
        request,
        plan,
        RevisePlanInput(approver="a", drop=["dcn"], pin=["bad"], device_hours=50.0, comment="x"),
    )
    ids = [h.id for h in revised.hypotheses]
    assert "dcn" not in ids and ids[0] == "bad" and revised.pinned == ["bad"]
    assert "dcn" not in [h.id for h in revised.held_back]
    assert revised.budget_device_hours == 50.0
    assert any(n.startswith("revised by a: dropped dcn; pinned bad") for n in revised.notes)
    # A second revision keeps the first one's pin and note.
    again = planner.revise(request, revised, RevisePlanInput(approver="b", drop=["wider"]))
    assert again.pinned == ["bad"] and sum(n.startswith("revised by") for n in again.notes) == 2
    assert planner.unknown_ids(again, ["nope", "bad"]) == ["nope"]


def test_the_phases_are_costed_for_the_planned_hypotheses() -> None:
    request = campaign_request()
    plan = planner.build_plan(request, [KNOWLEDGE])
    assert plan.phases == phases.with_phases(request, plan).phases
