"""The evidence protocol's pure decisions: seeds, screen, merges, additivity, proposal."""

import pytest

from activities.evidence import gate
from activities.planning import make_plan
from contracts import (
    Comparison,
    GateDecision,
    Hypothesis,
    Ledger,
    ModelSpec,
    PlanningInput,
    TrialSummary,
)
from tests.factories import campaign_request, result_of
from workflows import arms, phases, proposal


def plan_and_request(**overrides):
    request = campaign_request(baseline=ModelSpec(epochs=4, seed=7), **overrides)
    plan = make_plan(PlanningInput(campaign_id="c", request=request), lambda m, d: (360.0, 360.0))
    return phases.with_phases(request, plan), request


def ran(specs, ne_of_arm, test_offset=0.01):
    """Summaries of ``specs`` finished with validation NE ``ne_of_arm(arm, seed)``."""
    return [
        TrialSummary(trial_id=s.trial_id, phase=s.phase, arm=s.arm, seed=s.model.seed).finished(
            result_of("c", s.trial_id, ne_of_arm(s.arm, s.model.seed), 0.1)
        )
        for s in specs
    ]


def test_seed_sets_are_disjoint_so_confirmation_never_reuses_a_selection_seed() -> None:
    _, request = plan_and_request(seeds=4)
    screen = {arms.screen_seed(request)}
    gate_ = set(arms.gate_seeds(request))
    explore = {arms.exploration_seed(request)}
    confirm = set(arms.confirmation_seeds(request))
    assert len(gate_) == len(confirm) == 4
    sets = [screen, gate_, explore, confirm]
    assert sum(len(s) for s in sets) == len(set().union(*sets))  # no seed in two sets
    assert min(gate_) == 8  # offsets from the baseline's seed (7)


def test_plan_costs_every_phase_with_its_seeds_and_the_cheaper_screen() -> None:
    plan, request = plan_and_request()
    n, k = len(plan.hypotheses), request.seeds
    by_phase = {p.phase: p for p in plan.phases}
    # Screen at 2 of 4 epochs (half the cost), then baseline + better half on k seeds.
    gated = (1 + (n + 1) // 2) * k
    assert by_phase["validation"].trials == n + 1 + gated
    assert by_phase["validation"].estimated_device_hours == pytest.approx(
        ((n + 1) * 0.5 + gated) * 0.1
    )
    assert by_phase["combination"].trials == phases.MAX_MERGES * k
    assert by_phase["exploitation"].trials == request.exploitation_trials + k
    assert by_phase["confirmation"].trials == 2 * k
    assert plan.estimated_device_hours == pytest.approx(
        sum(p.estimated_device_hours for p in plan.phases)
    )


def test_screen_runs_one_seed_at_half_the_epochs_and_promotes_the_better_half() -> None:
    plan, request = plan_and_request()
    specs = phases.screen_trials("c", request, plan)
    assert {s.model.epochs for s in specs} == {2} and {s.model.seed for s in specs} == {7}
    assert all(s.estimated_device_hours == pytest.approx(0.05) for s in specs)
    ne = {"baseline": 0.90, "v-wider-embeddings": 0.88, "v-lower-dense-lr": 0.95}
    trials = ran(specs, lambda arm, seed: ne.get(arm, 0.91))
    trials = [t for t in trials if t.arm != "v-larger-batch"]  # it failed at the rung
    decision = phases.screen(request, plan, trials)
    assert len(decision.promoted) == 3 and decision.promoted[0] == "v-wider-embeddings"
    assert "v-lower-dense-lr" not in decision.promoted
    failed = next(r for r in decision.results if r.arm == "v-larger-batch")
    assert not failed.promoted and "failed" in failed.reason


def test_gate_trials_pair_every_arm_with_the_baseline_seed_by_seed() -> None:
    plan, request = plan_and_request()
    decision = phases.screen(
        request, plan, ran(phases.screen_trials("c", request, plan), lambda a, s: 0.9)
    )
    specs = phases.validation_gate_trials("c", request, plan, decision)
    seeds = arms.gate_seeds(request)
    # Seed by seed: a budget cut leaves whole pairs.
    assert [s.model.seed for s in specs[: 1 + len(decision.promoted)]] == [seeds[0]] * (
        1 + len(decision.promoted)
    )
    assert {s.model.epochs for s in specs} == {4}
    trials = ran(specs, lambda arm, seed: 0.9 - (0.01 if arm == decision.promoted[0] else 0))
    inp = phases.gate_input(request, trials, decision.promoted, seeds)
    assert [r.seed for r in inp.baseline] == seeds
    assert all(len(c.runs) == request.seeds for c in inp.candidates)


def passed_decision(*gains: tuple[str, float]) -> GateDecision:
    return GateDecision(
        metric="ne",
        correction="Holm-Bonferroni",
        alpha=0.05,
        min_effect=0.0,
        comparisons=[
            Comparison(hypothesis_id=arm, gain=g, gain_low=g / 2, gain_high=g * 2, passed=True)
            for arm, g in gains
        ],
        passed=[arm for arm, _ in gains],
    )


def test_conflicting_hypotheses_are_never_stacked() -> None:
    plan, _ = plan_and_request()
    # wider- and deeper-over-arch both set over_hidden: they must not be merged.
    decision = passed_decision(
        ("v-wider-over-arch", 0.03), ("v-deeper-over-arch", 0.02), ("v-wider-embeddings", 0.01)
    )
    groups, skipped = phases.merges(plan, decision)
    assert ["wider-over-arch", "deeper-over-arch"] not in groups
    assert not any({"wider-over-arch", "deeper-over-arch"} <= set(g) for g in groups)
    assert groups == [
        ["wider-over-arch", "wider-embeddings"],
        ["deeper-over-arch", "wider-embeddings"],
    ]
    assert any("over_hidden" in s for s in skipped)
    assert len(skipped) == 2  # the pair and the triple


def test_merges_are_tried_best_first_and_capped() -> None:
    plan, _ = plan_and_request()
    decision = passed_decision(
        ("v-wider-embeddings", 0.03), ("v-lower-dense-lr", 0.02), ("v-larger-batch", 0.01)
    )
    groups, skipped = phases.merges(plan, decision)
    assert not skipped
    # The triple (0.06) first, then the pairs by the sum of their gains.
    assert groups == [
        ["wider-embeddings", "lower-dense-lr", "larger-batch"],
        ["wider-embeddings", "lower-dense-lr"],
        ["wider-embeddings", "larger-batch"],
    ]
    assert phases.merges(plan, passed_decision(("v-wider-embeddings", 0.03))) == ([], [])


def test_additivity_compares_a_merge_with_the_sum_of_its_parts() -> None:
    validation = passed_decision(("v-a", 0.02), ("v-b", 0.01))
    combination = passed_decision(("c-a+b", 0.045))
    hurting = GateDecision(
        metric="ne",
        correction="Holm-Bonferroni",
        alpha=0.05,
        min_effect=0.0,
        comparisons=[Comparison(hypothesis_id="c-a+b", gain=-0.01, gain_low=-0.02, gain_high=0.0)],
    )
    [synergy] = phases.additivity(validation, combination)
    assert synergy.parts == ["a", "b"] and synergy.parts_gain == pytest.approx(0.03)
    assert synergy.ratio == pytest.approx(1.5) and synergy.verdict == "synergy"
    assert phases.additivity(validation, hurting)[0].verdict == "hurts"


def test_search_space_keeps_the_candidates_changes_fixed() -> None:
    space = phases.search_space({"dense_lr": 3e-4, "embedding_dim": 32})
    assert "dense_lr" not in space.fields and "sparse_lr" in space.fields
    assert space.fixed == {"dense_lr": 3e-4, "embedding_dim": 32}


def proposal_for(plan, request, decisions):
    return proposal.launch_proposal(
        request,
        plan,
        decisions=decisions,
        screen_decision=None,
        additivity_=[],
        tuned={},
        ledger=Ledger(),
        notes={},
        risks=None,
    )


def test_launch_only_when_the_test_confirmation_passes() -> None:
    plan, request = plan_and_request()
    seeds = arms.confirmation_seeds(request)
    base = [(s, 0.90 + 0.002 * i) for i, s in enumerate(seeds)]

    def confirm(gain: float):
        trials = [
            TrialSummary(trial_id=f"{arm}~t{s}", phase="confirmation", arm=arm, seed=s).finished(
                result_of("c", f"{arm}~t{s}", v - (gain if arm != "baseline" else 0) - 0.01, 0.1)
            )
            for s, v in base
            for arm in ("baseline", "v-wider-embeddings")
        ]
        # Jitter so that the seed-to-seed variation is measured.
        trials[1] = trials[1].model_copy(
            update={"test": trials[1].test.model_copy(update={"ne": trials[1].test.ne + 0.0005})}
        )
        return gate(phases.gate_input(request, trials, ["v-wider-embeddings"], seeds, split="test"))

    validation = passed_decision(("v-wider-embeddings", 0.02))
    launch = proposal_for(plan, request, {"validation": validation, "confirmation": confirm(0.02)})
    assert launch.verdict == "launch" and launch.changes == {"embedding_dim": 32}
    assert launch.headline.startswith("launch v-wider-embeddings: test NE gain +2.")
    null = proposal_for(plan, request, {"validation": validation, "confirmation": confirm(0.0)})
    assert null.verdict == "no launchable improvement"
    assert "passed validation but on the test split" in null.headline
    nothing = proposal_for(plan, request, {})
    assert nothing.verdict == "no launchable improvement" and nothing.candidate == ""


def test_the_leader_is_the_largest_passed_gain_across_selection_gates() -> None:
    decisions = {
        "validation": passed_decision(("v-a", 0.01)),
        "combination": passed_decision(("c-a+b", 0.03)),
        "confirmation": passed_decision(("c-a+b", 0.05)),
    }
    leader = phases.leader(decisions)
    assert leader is not None and leader.hypothesis_id == "c-a+b" and leader.gain == 0.03
    assert phases.leader({}) is None


def test_a_hypothesis_conflicting_with_the_plan_is_named() -> None:
    plan, _ = plan_and_request()
    plan = plan.model_copy(
        update={
            "hypotheses": [
                Hypothesis(id="dcn", title="", changes={"interaction": "dcn"}),
                Hypothesis(id="proj", title="", changes={"interaction": "projection"}),
            ]
        }
    )
    groups, skipped = phases.merges(plan, passed_decision(("v-dcn", 0.02), ("v-proj", 0.01)))
    assert groups == [] and "interaction" in skipped[0]


def test_a_merge_not_yet_run_is_costed_from_its_parts() -> None:
    # Measured parts at full fidelity (over the same basis as the baseline's) multiply;
    # a part not measured costs what the plan's cost model said, its epochs taken out
    # (the merge's own epochs are in its basis already).
    plan, request = plan_and_request()
    dear = Hypothesis(id="deep", title="t", changes={"epochs": 8}, cost_factor=6.0)
    plan = plan.model_copy(update={"hypotheses": [*plan.hypotheses, dear]})
    costs = {"baseline": 1.2, "v-larger-batch": 0.6}
    assert arms.merged_cost("c-larger-batch+deep", request, plan, costs) == pytest.approx(
        0.5 * 6.0 * 4 / 8
    )
    assert arms.merged_cost("c-larger-batch+deep", request, plan, {}) == pytest.approx(
        next(h for h in plan.hypotheses if h.id == "larger-batch").cost_factor * 3.0
    )


def test_a_merge_of_an_id_that_holds_a_plus_applies_its_parts() -> None:
    # The knowledge agent's merged hypotheses are ids like ``combo-a+b``: merged again with a
    # third, their arm is ``c-combo-a+b+c`` (a campaign failed its workflow task on it).
    plan, request = plan_and_request()
    combo = Hypothesis(id="combo-emb+lr", title="t", rationale="r",
                       changes={"embedding_dim": 32, "dense_lr": 1e-3})  # fmt: skip
    plan = plan.model_copy(update={"hypotheses": [*plan.hypotheses, combo]})
    arm = arms.merge_arm(["combo-emb+lr", "larger-batch"])
    known = {h.id for h in plan.hypotheses}
    assert arms.arm_hypotheses(arm, known) == ["combo-emb+lr", "larger-batch"]
    assert arms.arm_hypotheses(arm) == ["combo-emb", "lr", "larger-batch"]  # ids unknown
    larger_batch = next(h for h in plan.hypotheses if h.id == "larger-batch").changes
    assert arms.arm_changes(request, plan, arm, {}) == {**combo.changes, **larger_batch}
    validation = passed_decision(("v-combo-emb+lr", 0.02), ("v-larger-batch", 0.01))
    [merged] = phases.additivity(validation, passed_decision((arm, 0.03)))
    assert merged.parts == ["combo-emb+lr", "larger-batch"]
    assert merged.parts_gain == pytest.approx(0.03)


def test_a_merge_that_changes_what_an_arm_tried_changes_is_skipped() -> None:
    plan, _ = plan_and_request()
    larger_batch = next(h for h in plan.hypotheses if h.id == "larger-batch").changes
    combo = Hypothesis(id="combo-emb+batch", title="t", rationale="r",
                       changes={"embedding_dim": 32, **larger_batch})  # fmt: skip
    plan = plan.model_copy(update={"hypotheses": [*plan.hypotheses, combo]})
    decision = passed_decision(
        ("v-combo-emb+batch", 0.03), ("v-larger-batch", 0.02), ("v-lower-dense-lr", 0.01)
    )
    before, _ = phases.merges(plan, decision)  # histories from before the patch
    assert ["combo-emb+batch", "larger-batch"] in before
    groups, skipped = phases.merges(plan, decision, skip_repeats=True)
    # combo + batch is the combo, and the triple is combo + lr: both skipped
    assert groups == [["combo-emb+batch", "lower-dense-lr"], ["larger-batch", "lower-dense-lr"]]
    assert len(skipped) == 2 and all("larger-batch adds nothing" in s for s in skipped)
