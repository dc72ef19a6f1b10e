"""The evidence protocol: the phase loops, beside their pure decisions in ``workflows.phases``.

Validation screens every planned arm on one seed and gates the promoted ones on paired seeds;
combination merges what passed; exploitation tunes around the leader with an Optuna study;
confirmation tests the leader on the test split with fresh seeds; then the launch proposal
(or the honest absence of one). Every step derives its trials from the state and skips those
already run, so a run continued as new (or a replay) resumes where the last one stopped.
"""

import math

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from contracts import (
        AskedTrial,
        AskInput,
        CampaignPhase,
        FootprintInput,
        GateDecision,
        GateInput,
        LaunchProposal,
        ModelRisks,
        Notification,
        Plan,
        TellInput,
        TrialResult,
        TrialSpec,
        direction,
    )
    from workflows import arms, options, phases, proposal
    from workflows.context import CampaignContext
    from workflows.trials import TrialRunner

PHASES: tuple[CampaignPhase, ...] = ("validation", "combination", "exploitation", "confirmation")


class EvidenceProtocol:
    """Runs the evidence protocol's phases for one campaign.

    Args:
        ctx: The campaign's context.
        trials: Runs the phases' trials.
    """

    def __init__(self, ctx: CampaignContext, trials: TrialRunner) -> None:
        self.ctx = ctx
        self.trials = trials

    async def run(self, plan: Plan) -> None:
        """The phases from the current one on, then the proposal."""
        steps = {
            "validation": self._validation,
            "combination": self._combination,
            "exploitation": self._exploitation,
            "confirmation": self._confirmation,
        }
        current = self.ctx.state.phase
        first = PHASES.index(current) if current in PHASES else 0
        for phase in PHASES[first:]:
            if self.ctx.halted():
                break
            await steps[phase](plan)
            await self.ctx.record()
        await self._propose(plan)

    async def _gate(self, phase: str, inp: GateInput) -> GateDecision:
        """The statistical gate (an activity: numpy and scipy stay out of the workflow); its
        decision record is kept in the state, so the reasons are in the history."""
        ctx = self.ctx
        if phase in ctx.state.decisions:
            return ctx.state.decisions[phase]
        decision = await self._gate_activity(inp, f"{phase} gate")
        ctx.set(decisions={**ctx.state.decisions, phase: decision})
        self._update_leader()
        return decision

    async def _gate_activity(self, inp: GateInput, name: str) -> GateDecision:
        decision: GateDecision = await workflow.execute_activity(
            "gate_hypotheses",
            inp,
            result_type=GateDecision,
            start_to_close_timeout=options.RECORD_TIMEOUT,
            retry_policy=options.BOOKKEEPING_RETRY,
            summary=f"{name}: {len(inp.candidates)} candidate(s) vs the baseline",
        )
        return decision

    def _update_leader(self) -> None:
        """Best and baseline as the gates see them: means over the gate's seeds, and only a
        candidate that passed a gate (a single run's best is noise)."""
        ctx = self.ctx
        validation = ctx.state.decisions.get("validation")
        leader = phases.leader(ctx.state.decisions)
        changes: dict[str, object] = {}
        if validation is not None and validation.comparisons:
            changes["baseline_metric"] = validation.comparisons[0].baseline_mean
        if leader is not None:
            changes |= {"best_trial_id": leader.hypothesis_id, "best_metric": leader.candidate_mean}
        ctx.set(**changes)
        ctx.publish()

    async def _validation(self, plan: Plan) -> None:
        ctx, request = self.ctx, self.ctx.request
        screen_specs = phases.screen_trials(ctx.id, request, plan)
        ctx.enter(
            "validation",
            f"Screening {len(screen_specs)} arms: one seed, "
            f"{screen_specs[0].model.epochs} epoch(s).",
        )
        await self.trials.run_batch(screen_specs)
        if ctx.halted():
            return
        screen = ctx.state.screen or phases.screen(request, plan, ctx.state.trials)
        ctx.set(screen=screen)
        gate_specs = phases.validation_gate_trials(ctx.id, request, plan, screen)
        ctx.set(
            message=f"Gate: the baseline and {len(screen.promoted)} promoted hypotheses on "
            f"{request.seeds} seeds ({len(gate_specs)} trials)."
        )
        ctx.publish()
        await self.trials.run_batch(gate_specs)
        if ctx.halted():
            return
        seeds = arms.gate_seeds(request)
        await self._gate(
            "validation", phases.gate_input(request, ctx.state.trials, screen.promoted, seeds)
        )

    async def _combination(self, plan: Plan) -> None:
        ctx, request = self.ctx, self.ctx.request
        validation = ctx.state.decisions.get("validation")
        groups, skipped = phases.merges(plan, validation)
        passed = len(validation.passed) if validation else 0
        if not groups:
            why = (
                f"{passed} {'hypothesis' if passed == 1 else 'hypotheses'} passed the gate; "
                "merging needs two"
                if passed < 2
                else "every merge of the passing hypotheses conflicts"
            )
            ctx.note("combination", "; ".join([f"no merge: {why}", *skipped]))
            return
        ctx.note("combination", "; ".join(skipped))
        specs = phases.combination_trials(ctx.id, request, plan, groups)
        merged = [arms.merge_arm(g) for g in groups]
        ctx.enter("combination", f"Merging {', '.join(merged)} on {request.seeds} seeds.")
        await self.trials.run_batch(specs)
        if ctx.halted():
            return
        seeds = arms.gate_seeds(request)
        decision = await self._gate(
            "combination", phases.gate_input(request, ctx.state.trials, merged, seeds)
        )
        assert validation is not None
        ctx.set(additivity=phases.additivity(validation, decision))

    async def _exploitation(self, plan: Plan) -> None:
        ctx, request = self.ctx, self.ctx.request
        count = request.exploitation_trials
        if count == 0:
            ctx.note("exploitation", "exploitation_trials is 0")
            return
        leader = phases.leader(ctx.state.decisions)
        base_arm = leader.hypothesis_id if leader else arms.BASELINE
        fixed = arms.arm_changes(request, plan, base_arm, ctx.state.tuned)
        if all(f in fixed for f in phases.TUNED_FIELDS):
            # A change proposed from history may be an earlier campaign's tuned move: it sets
            # every knob exploitation tunes, so there is nothing left to search around it.
            ctx.note("exploitation", f"{base_arm} already sets {', '.join(phases.TUNED_FIELDS)}")
            return
        space = phases.search_space(fixed)
        study = f"{ctx.id}/exploitation"
        ctx.enter(
            "exploitation",
            f"Tuning {', '.join(space.fields)} around {base_arm} ({count} {request.sampler} "
            "trials, pruned by successive halving).",
        )
        per_round = request.budget.max_parallel_trials
        rounds = math.ceil(count / per_round)
        while ctx.state.search_rounds < rounds and not ctx.halted():
            done = ctx.state.search_rounds
            asked: list[AskedTrial] = await workflow.execute_activity(
                "search_ask",
                AskInput(
                    study_name=study,
                    ask_id=f"round-{done}",
                    space=space,
                    sampler=request.sampler,
                    seed=request.baseline.seed,
                    count=min(per_round, count - done * per_round),
                    direction=direction(request.metric),
                ),
                result_type=list[AskedTrial],
                start_to_close_timeout=options.RECORD_TIMEOUT,
                retry_policy=options.BOOKKEEPING_RETRY,
                summary=f"ask the study for round {done + 1} of {rounds}",
            )
            tuned = {arms.tuned_arm(a.number): a.changes for a in asked}
            ctx.set(tuned={**ctx.state.tuned, **tuned})
            specs = [
                phases.exploration_trial(ctx.id, request, plan, a.number, a.changes, study)
                for a in asked
            ]
            await self.trials.run_batch(specs, after=self._tell)
            ctx.set(search_rounds=done + 1)
        if ctx.halted():
            return
        await self._gate_best_tuned(plan)

    async def _gate_best_tuned(self, plan: Plan) -> None:
        """Re-run the study's best move on the gate seeds and gate it."""
        ctx, request = self.ctx, self.ctx.request
        best = phases.best_explored(request, ctx.state.trials)
        if best is None:
            ctx.note("exploitation", "no tuned trial finished")
            return
        seeds = arms.gate_seeds(request)
        reseed = arms.seeded_trials(
            ctx.id, request, plan, [(best, "exploitation", ctx.state.tuned[best])], seeds, "s"
        )
        ctx.set(message=f"Best tuned move {best}: re-run on {request.seeds} gate seeds.")
        await self.trials.run_batch(reseed)
        if ctx.halted():
            return
        await self._gate(
            "exploitation", phases.gate_input(request, ctx.state.trials, [best], seeds)
        )

    async def _tell(self, spec: TrialSpec, result: TrialResult) -> None:
        """Tell the study how a tuned trial ended (complete, pruned or failed)."""
        assert spec.search is not None
        value = result.metric(self.ctx.request.metric)
        state = (
            "complete"
            if result.state == "succeeded" and value is not None
            else "pruned"
            if result.state == "pruned"
            else "fail"
        )
        await workflow.execute_activity(
            "search_tell",
            TellInput(
                study_name=spec.search.study_name,
                number=spec.search.number,
                state=state,
                value=value if state == "complete" else None,
                intermediate=result.epoch_values,
            ),
            start_to_close_timeout=options.RECORD_TIMEOUT,
            retry_policy=options.BOOKKEEPING_RETRY,
            summary=f"tell the study {spec.trial_id} {state}",
        )

    async def _confirmation(self, plan: Plan) -> None:
        ctx, request = self.ctx, self.ctx.request
        leader = phases.leader(ctx.state.decisions)
        if leader is None:
            ctx.note("confirmation", "nothing passed a gate: there is nothing to confirm")
            return
        arm = leader.hypothesis_id
        seeds = arms.confirmation_seeds(request)
        changes = arms.arm_changes(request, plan, arm, ctx.state.tuned)
        specs = arms.seeded_trials(
            ctx.id,
            request,
            plan,
            [(arms.BASELINE, "confirmation", {}), (arm, "confirmation", changes)],
            seeds,
            "t",
        )
        ctx.enter(
            "confirmation",
            f"Confirming {arm} against the baseline on the test split, {len(seeds)} fresh seeds.",
        )
        await self.trials.run_batch(specs)
        if ctx.halted():
            return
        await self._gate(
            "confirmation",
            phases.gate_input(request, ctx.state.trials, [arm], seeds, split="test"),
        )

    async def _propose(self, plan: Plan) -> None:
        """The launch proposal, or the honest absence of one (also after a stop)."""
        ctx, request = self.ctx, self.ctx.request
        if ctx.state.proposal is not None:
            return
        confirmation = ctx.state.decisions.get("confirmation")
        risks: ModelRisks | None = None
        if confirmation is not None and confirmation.passed:
            risks = await self._risks(plan, confirmation.passed[0])
        answer = proposal.launch_proposal(
            request,
            plan,
            decisions=ctx.state.decisions,
            screen_decision=ctx.state.screen,
            additivity_=ctx.state.additivity,
            tuned=ctx.state.tuned,
            ledger=ctx.state.ledger,
            notes=ctx.state.phase_notes,
            risks=risks,
            ended=(
                "the campaign was stopped"
                if ctx.stopping
                else "the budget ran out"
                if ctx.budget_closed
                else ""
            ),
        )
        answer = self._account(answer, plan)
        ctx.set(proposal=answer)
        await ctx.notify(
            Notification(
                campaign_id=ctx.id,
                kind="launch_proposal",
                goal=request.goal,
                approvers=request.approvers,
                proposal=answer,
            )
        )

    def _account(self, answer: LaunchProposal, plan: Plan) -> LaunchProposal:
        """What the proposal adds about the campaign's own course (nothing, here)."""
        return answer

    async def _risks(self, plan: Plan, arm: str) -> ModelRisks:
        """What launching ``arm`` would cost in serving: its size and its trials' time."""
        ctx, request = self.ctx, self.ctx.request
        risks = await self._footprint(plan, arm)
        ratio = proposal.trial_time_ratio(ctx.state.trials, arm, arms.confirmation_seeds(request))
        return risks.model_copy(update={"trial_time_ratio": ratio})

    async def _footprint(self, plan: Plan, arm: str) -> ModelRisks:
        """``arm``'s parameters and embedding bytes against the baseline's."""
        ctx, request = self.ctx, self.ctx.request
        candidate = request.baseline.with_changes(
            arms.arm_changes(request, plan, arm, ctx.state.tuned)
        )
        risks: ModelRisks = await workflow.execute_activity(
            "model_footprint",
            FootprintInput(baseline=request.baseline, candidate=candidate, dataset=request.dataset),
            result_type=ModelRisks,
            start_to_close_timeout=options.RECORD_TIMEOUT,
            retry_policy=options.BOOKKEEPING_RETRY,
            summary=f"size of {arm} vs the baseline",
        )
        return risks
