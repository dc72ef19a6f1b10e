"""The multi-fidelity protocol on the time-skipping server, with activities mocked by name."""

import pytest
from temporalio.testing import WorkflowEnvironment

from contracts import Budget, CampaignResult, CampaignStatus
from tests.fakes import HOUR, SPACE_HYPOTHESES, FakeActivities
from tests.workflows.drive import start_approved
from workflows import arms, screening
from workflows.campaign import CampaignWorkflow


async def campaign(env: WorkflowEnvironment, queue: str, hours: float) -> CampaignStatus:
    """A multi-fidelity campaign on ``hours`` device-hours, approved and run to its end."""
    handle = await start_approved(
        env,
        queue,
        protocol="multi-fidelity",
        budget=Budget(device_hours=hours, max_parallel_trials=2),
    )
    result: CampaignResult = await handle.result()
    return result.status


async def straddling_campaign(
    env: WorkflowEnvironment, queue: str, fakes: FakeActivities
) -> CampaignStatus:
    """A campaign on 30 device-hours whose one better candidate beats the baseline by less
    than the noise, so that its gate's interval straddles zero."""
    fakes.ne = {"baseline": 0.90, "v-probe-1": 0.8998}
    status = await campaign(env, queue, hours=30.0)
    assert status.plan is not None and status.plan.exploration is not None
    return status


async def test_the_screen_finds_the_lever_and_the_campaign_launches_it(
    time_skipping_env: WorkflowEnvironment, queue: str, fakes: FakeActivities, workers: None
) -> None:
    handle = await start_approved(
        time_skipping_env,
        queue,
        protocol="multi-fidelity",
        budget=Budget(device_hours=60.0, max_parallel_trials=2),
    )
    result: CampaignResult = await handle.result()
    status = result.status

    assert status.protocol == "multi-fidelity" and status.phase == "done"
    plan = status.plan
    assert plan is not None and plan.exploration is not None
    # The probe of dropout duplicates the catalog's over-arch-dropout: screened once.
    assert plan.exploration.pool == {"knowledge": 6, "search-space": 2}
    assert [r.candidates for r in plan.exploration.rungs] == [8, 3, 3]
    # Every candidate screened at 1/9 of the data, the best third (at least 3) onwards.
    assert [len(r.values) for r in status.rungs] == [8, 3, 3]
    assert status.rungs[0].promoted[0] == "v-probe-1"
    assert status.decisions["validation"].passed[0] == "v-probe-1"
    proposal = status.proposal
    assert proposal is not None and proposal.verdict == "launch"
    assert proposal.candidate == "v-probe-1" and proposal.changes == {"epochs": 2}
    assert "confirmed v-probe-1" in proposal.ended_by
    # The confirmation is the last gate: one look (the whole alpha) at the seeds the budget
    # left affords, fixed at its start; earlier gates' caps are what their budget afforded.
    confirm_seeds = status.gate_seeds["confirmation"]
    assert [k for k in status.looks if k.startswith("confirmation")] == [
        f"confirmation#{confirm_seeds}"
    ]
    assert 3 <= confirm_seeds <= 8 and status.looks[f"confirmation#{confirm_seeds}"].alpha == 0.05
    assert proposal.confirmation is not None and proposal.confirmation.n == confirm_seeds
    # Two passed validation, but the budget left could not give both 8 seeds: the most
    # certain one alone is confirmed.
    assert len(status.decisions["validation"].passed) == 2
    assert [c.hypothesis_id for c in status.decisions["confirmation"].comparisons] == ["v-probe-1"]
    assert any(line.startswith("screen rung 1: 8 candidates") for line in proposal.explored)
    # Screened trials leave the state once their rung is decided; the store has them all.
    assert status.trials_archived > 0
    assert not any(t.trial_id.endswith(("~r0", "~r1", "~r2")) for t in status.trials)
    assert len(fakes.recorded) == len(status.trials) + status.trials_archived
    assert status.device_hours_spent <= 60.0 + 1e-9
    assert result.improvement is not None and result.improvement > 0.05
    # The search's trials may be stopped early only where the stop saves half their cost.
    share = plan.exploration.fixed_cost_share
    tuned = [r.spec for r in fakes.recorded if r.spec.search is not None]
    assert tuned and all(
        s.search.last_prunable_epoch == arms.last_prunable_epoch(s.model.epochs, share)
        for s in tuned
        if s.search is not None
    )


async def test_a_task_where_nothing_helps_says_which_rule_ended_it(
    time_skipping_env: WorkflowEnvironment, queue: str, fakes: FakeActivities, workers: None
) -> None:
    fakes.ne = {}  # every arm, tuned ones included, has the same mean NE
    handle = await start_approved(
        time_skipping_env,
        queue,
        protocol="multi-fidelity",
        budget=Budget(device_hours=40.0, max_parallel_trials=2),
    )
    status = (await handle.result()).status
    proposal = status.proposal
    assert proposal is not None and proposal.verdict == "no launchable improvement"
    assert proposal.ended_by.startswith("no candidate passed a gate")
    assert proposal.unspent_device_hours == pytest.approx(40.0 - status.device_hours_spent)
    query = await handle.query(CampaignWorkflow.status)
    assert query.ended_by == "" or query.ended_by == proposal.ended_by


async def test_a_confirmation_the_budget_cuts_short_judges_the_pairs_it_has(
    time_skipping_env: WorkflowEnvironment, queue: str, fakes: FakeActivities, workers: None
) -> None:
    fakes.cost_on_test = 3.0  # the confirmation's trials cost three times what others did
    status = await campaign(time_skipping_env, queue, hours=60.0)
    # The look was sized to the budget by the campaign itself: no engineer is asked for more.
    assert not [n for n in fakes.notifications if n.kind == "budget_exhausted"]
    capped = status.gate_seeds["confirmation"]
    confirmation = status.decisions["confirmation"]
    (compared,) = confirmation.comparisons
    # The budget ran out before the look's last seeds; the whole pairs were judged.
    assert 2 <= compared.n < capped
    assert status.proposal is not None and status.proposal.verdict == "launch"
    assert status.proposal.ended_by.startswith("confirmed v-probe-1 on the test split")


async def test_a_dear_move_the_search_finds_keeps_the_budget_for_its_gate(
    time_skipping_env: WorkflowEnvironment, queue: str, fakes: FakeActivities, workers: None
) -> None:
    # Every move of the whole-space search beats all the screen found but costs 4 baseline
    # trials, whatever its epochs say (its estimate). A campaign once tuned on until what was
    # left could not gate its best move, and ended "no candidate passed a gate" with the move
    # in hand.
    fakes.tuned_ne, fakes.tuned_cost = 0.80, 4.0
    status = await campaign(time_skipping_env, queue, hours=60.0)
    gated = status.decisions["exploitation"]
    assert gated.passed and gated.passed[0].startswith("x")
    proposal = status.proposal
    assert proposal is not None and proposal.verdict == "launch"
    assert proposal.candidate.startswith("x")
    assert status.device_hours_spent <= 60.0 + 1e-9
    # What every kept move cost at full fidelity over its estimate was measured.
    assert {a for a in status.tuned} <= set(status.arm_costs)


async def test_a_dear_move_s_gates_are_budgeted_at_what_it_costs(
    time_skipping_env: WorkflowEnvironment, queue: str, fakes: FakeActivities, workers: None
) -> None:
    # The screen's lever costs 3 baseline trials (a smaller batch: more steps), as the plan's
    # cost model said. Its gate runs were once estimated at 1x: its screen run was measured
    # over an estimate that held the 3x already. Merges were estimated at 1x too, so a
    # campaign (MovieLens-100k: three passed, merges costing 1.4-2x) ran one and had nothing
    # left to confirm with.
    lever, *others = SPACE_HYPOTHESES
    dear = lever.model_copy(update={"changes": {"batch_size": 64}, "cost_factor": 3.0})
    fakes.space_hypotheses = [dear, *others]
    fakes.arm_cost = {"v-probe-1": 3.0, "v-wider-embeddings": 1.5}
    status = await campaign(time_skipping_env, queue, hours=60.0)
    assert status.arm_costs["v-probe-1"] == pytest.approx(3.0)
    for look in ("s1", "t1"):
        baseline = fakes.specs[f"baseline~{look}"].estimated_device_hours
        assert fakes.specs[f"v-probe-1~{look}"].estimated_device_hours == pytest.approx(
            3.0 * baseline
        )
    # The merge, costed at its parts' 3 x 1.5, did not fit beside the confirmation's reserve.
    assert status.decisions["validation"].passed == ["v-probe-1", "v-wider-embeddings"]
    assert status.phase_notes["combination"] == "the budget stopped the gate at 0 seeds"
    assert not [t for t in fakes.specs if t.startswith("c-")]
    proposal = status.proposal
    assert proposal is not None and proposal.verdict == "launch"
    assert proposal.candidate == "v-probe-1"
    assert status.device_hours_spent <= 60.0 + 1e-9


async def test_a_budget_too_small_for_the_gate_confirms_the_screens_best_ungated(
    time_skipping_env: WorkflowEnvironment, queue: str, fakes: FakeActivities, workers: None
) -> None:
    # Trials cost 1.5x the plan's estimate: after the screen's first rung, what is left pays
    # for the confirmation's first look but not for the validation gate's as well. A campaign
    # once ended there "no candidate passed a gate" with most of its budget unspent.
    fakes.slow = 1.5
    status = await campaign(time_skipping_env, queue, hours=16.0)
    assert len(status.rungs) == 1 and status.rungs[0].promoted[0] == "v-probe-1"
    assert "validation" not in status.decisions
    assert (
        "v-probe-1, the best of the screen, goes to the confirmation ungated"
        in (status.phase_notes["confirmation"])
    )
    proposal = status.proposal
    assert proposal is not None and proposal.verdict == "launch"
    assert proposal.candidate == "v-probe-1"
    assert proposal.confirmation is not None and proposal.confirmation.n >= 3
    assert status.device_hours_spent <= 16.0 + 1e-9


async def test_a_candidate_the_budget_left_undecided_goes_to_the_confirmation(
    time_skipping_env: WorkflowEnvironment, queue: str, fakes: FakeActivities, workers: None
) -> None:
    # One candidate beats the baseline by less than the noise: its gate's interval straddles
    # zero when the budget stops it. A campaign once ended there "no candidate passed a gate"
    # with a fifth of its budget unspent (synthetic-dense: +12.6% on 3 seeds, p = 0.013).
    status = await straddling_campaign(time_skipping_env, queue, fakes)
    (straddled,) = status.decisions["validation"].comparisons
    assert straddled.hypothesis_id == "v-probe-1" and not straddled.passed
    assert straddled.gain_low is not None and straddled.gain_low < 0 < straddled.gain
    assert straddled.n == status.gate_seeds["validation"] < status.plan.exploration.max_seeds
    assert f"v-probe-1's gate at {straddled.n} seeds" in status.phase_notes["confirmation"]
    confirmed = status.decisions["confirmation"]
    assert [c.hypothesis_id for c in confirmed.comparisons] == ["v-probe-1"]
    # The confirmation decides: a gain this small does not survive it.
    proposal = status.proposal
    assert proposal is not None and proposal.verdict == "no launchable improvement"
    assert proposal.ended_by.startswith("the confirmation on fresh seeds did not support")


async def test_a_tuned_trial_may_cost_what_the_baseline_costs_however_the_screen_was_estimated(
    time_skipping_env: WorkflowEnvironment, queue: str, fakes: FakeActivities, workers: None
) -> None:
    # The screen's drawn points are estimated at 8x the baseline's cost (the cost model) but
    # cost what the baseline does: actual over estimated, averaged over every trial, falls to
    # its floor. Tuned trials' caps once followed that average and cut a trial of the
    # baseline's cost before its end, with no value.
    fakes.space_hypotheses = [h.model_copy(update={"cost_factor": 8.0}) for h in SPACE_HYPOTHESES]
    await campaign(time_skipping_env, queue, hours=200.0)
    tuned = [s for s in fakes.specs.values() if s.search is not None]
    assert tuned
    base_epochs = fakes.specs["baseline~r0"].model.epochs
    for spec in tuned:
        baseline_cost = fakes.trial_seconds / HOUR * spec.model.epochs / base_epochs
        assert spec.max_device_hours is not None
        assert spec.max_device_hours >= screening.COST_CAP * baseline_cost * 0.999, spec.trial_id


@pytest.mark.parametrize("hours", [30.0, 52.0, 60.0])
async def test_dear_candidates_after_an_over_estimated_screen_are_still_confirmed(
    time_skipping_env: WorkflowEnvironment,
    queue: str,
    fakes: FakeActivities,
    workers: None,
    hours: float,
) -> None:
    # The best candidates cost 4 baseline trials; the screen's drawn points were estimated
    # at 8 and cost 1, so the average correction of estimates put a trial below what the
    # baseline costs. Campaigns sized their steps with it and ended with a fifth to a quarter
    # of their budget left and nothing confirmed: the search had kept the confirmation at
    # the baseline's cost, or two dear candidates were chosen whose look did not fit.
    fakes.space_hypotheses = [h.model_copy(update={"cost_factor": 8.0}) for h in SPACE_HYPOTHESES]
    fakes.arm_cost = {"v-probe-1": 4.0, "v-wider-embeddings": 4.0}
    status = await campaign(time_skipping_env, queue, hours=hours)
    proposal = status.proposal
    assert proposal is not None and proposal.verdict == "launch", proposal
    assert proposal.ended_by.startswith(f"confirmed {proposal.candidate} on the test split")
    assert status.device_hours_spent <= hours + 1e-9


async def test_the_gates_ahead_of_the_search_leave_it_its_planned_share(
    time_skipping_env: WorkflowEnvironment, queue: str, fakes: FakeActivities, workers: None
) -> None:
    # A candidate as close to the baseline as the noise keeps its gate growing. Gates once
    # grew into the whole-space search's share, and the search, where combinations of knobs
    # are found, got nothing in 12 of 27 benchmark campaigns.
    status = await straddling_campaign(time_skipping_env, queue, fakes)
    assert status.plan.exploration.tuning_trials > 0
    assert status.search_rounds >= 1 and status.tuning


async def test_a_tuned_move_no_gate_could_afford_goes_to_the_confirmation_ungated(
    time_skipping_env: WorkflowEnvironment, queue: str, fakes: FakeActivities, workers: None
) -> None:
    # Trials cost 1.5x their estimate and the search's moves beat everything the screen
    # found: neither the validation gate nor the tuned move's gate can pay for its first look
    # and the confirmation's both, so the best tuned move is confirmed ungated.
    fakes.slow, fakes.tuned_ne = 1.5, 0.80
    status = await campaign(time_skipping_env, queue, hours=24.0)
    assert [k for k in status.looks if not k.startswith("confirmation")] == []
    assert status.phase_notes["exploitation"] == "the budget stopped the gate at 0 seeds"
    assert (
        "the best tuned move, goes to the confirmation ungated"
        in (status.phase_notes["confirmation"])
    )
    proposal = status.proposal
    assert proposal is not None and proposal.verdict == "launch"
    assert proposal.candidate.startswith("x")
    assert status.device_hours_spent <= 24.0 + 1e-9
