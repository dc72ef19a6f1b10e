"""The multi-fidelity protocol's tools: gates whose seeds grow only where they decide, and the
budget every step keeps (what actually running trials cost so far corrects the estimates).

``MultiFidelityProtocol`` (``workflows.multi_fidelity``) is built on these; the pure rules they
follow are in ``workflows.sequential`` (the looks and the split of alpha) and
``workflows.screening`` (the schedule).
"""

from collections.abc import Callable, Sequence
from typing import Any

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from contracts import GateDecision, GateInput, Phase, Plan, TrialSpec, TrialSummary
    from workflows import arms, phases, screening, sequential
    from workflows.protocol import EvidenceProtocol


# The seeds a gate may grow to are costed this much above the corrected estimates: a trial's
# wall time varies by about this much from one to the next.
CAP_HEADROOM = 1.1


class SequentialGates(EvidenceProtocol):
    """Sequential gates and the budget, for protocols whose size follows the budget."""

    # ---- gates whose seeds grow where they decide -----------------------------------------

    async def _sequential_gate(self, plan: Plan, gate: str, candidates: Sequence[str]) -> None:
        """Gate ``candidates`` look by look (``sequential``): more seeds only for those whose
        interval straddles the minimum effect, while the budget affords them."""
        ctx, request = self.ctx, self.ctx.request
        xp = plan.exploration
        assert xp is not None
        if not candidates:
            ctx.note(gate, ctx.state.phase_notes.get(gate) or "no candidate to gate")
            return
        confirming = gate == "confirmation"
        first = request.seeds if confirming else xp.first_look_seeds
        seeds_of: Callable[[int], list[int]] = (
            (lambda n: arms.confirmation_seeds(request, n))
            if confirming
            else (lambda n: arms.gate_seeds(request, n))
        )
        phase: Phase = "confirmation" if confirming else "baseline"
        open_ = list(candidates)
        reserve = 0.0 if confirming else self._confirmation_reserve(plan, open_)
        budgeted = workflow.patched("budgeted-looks")
        if budgeted:
            growth = reserve + self._search_reserve(plan, gate)
            cap = self._seed_cap(plan, gate, phase, open_, (first, seeds_of), growth)
            schedule = sequential.schedule(first, cap, final=confirming)
        else:
            schedule = sequential.looks(first, xp.max_seeds)
        for n in schedule:
            key = f"{gate}#{n}"
            if key not in ctx.state.looks:
                if not open_:
                    break
                seeds = seeds_of(n)
                specs = self._look_trials(plan, gate, phase, open_, seeds)
                if self._within_budget(specs, reserve=reserve) != specs:
                    ctx.note(
                        gate, f"the budget stopped the gate at {n - 1 if n > first else 0} seeds"
                    )
                    break
                # A look sized to the budget whose last trials cost more than estimated stops
                # there (no extension asked), and judges the whole pairs it has (trials start
                # seed by seed): cost, not any value measured, decided how many, so the test
                # keeps its error rate.
                self.trials.sized_to_budget = budgeted
                try:
                    await self.trials.run_batch(specs)
                finally:
                    self.trials.sized_to_budget = False
                if ctx.halted():
                    return
                self._note_costs(specs)
                inp = phases.gate_input(
                    request,
                    ctx.state.trials,
                    open_,
                    seeds,
                    split="test" if confirming else "validation",
                ).model_copy(
                    update={
                        "alpha": sequential.look_alpha(request.alpha, schedule),
                        "confidence": sequential.look_confidence(request.alpha, schedule),
                    }
                )
                await self._look(key, inp)
            open_ = sequential.undecided(ctx.state.looks[key], request.min_effect)
        keys = [f"{gate}#{n}" for n in schedule]
        looks = [ctx.state.looks[k] for k in keys if k in ctx.state.looks]
        final = sequential.merged(looks)
        if final is not None:
            ctx.set(decisions={**ctx.state.decisions, gate: final})
            self._update_leader()

    def _seed_cap(
        self,
        plan: Plan,
        gate: str,
        phase: Phase,
        candidates: list[str],
        seeding: tuple[int, Callable[[int], list[int]]],
        reserve: float,
    ) -> int:
        """The most seeds per arm (from the first look's up to the plan's ``max_seeds``) that
        the budget left after ``reserve`` affords ``candidates`` and the baseline. Fixed at
        the gate's start, before its first look (kept in ``gate_seeds``, so a run continued
        as new keeps it): the split of alpha it sets then keeps the error rate."""
        ctx = self.ctx
        if gate in ctx.state.gate_seeds:
            return ctx.state.gate_seeds[gate]
        first, seeds_of = seeding
        xp = plan.exploration
        assert xp is not None
        cap = min(first, xp.max_seeds)
        # A look the budget stops half way decides nothing: cost it with the estimates'
        # correction only where it raises them (it averages every phase's trials), and room.
        ratio = max(1.0, self._cost_ratio()) * CAP_HEADROOM
        for n in range(xp.max_seeds, cap, -1):
            specs = self._look_trials(plan, gate, phase, candidates, seeds_of(n))
            if self._within_budget(specs, reserve=reserve, ratio=ratio) == specs:
                cap = n
                break
        ctx.set(gate_seeds={**ctx.state.gate_seeds, gate: cap})
        return cap

    async def _look(self, key: str, inp: GateInput) -> GateDecision:
        """One look of a sequential gate (the gate activity), kept in ``state.looks``."""
        decision = await self._gate_activity(inp, key)
        self.ctx.set(looks={**self.ctx.state.looks, key: decision})
        return decision

    def _look_trials(
        self, plan: Plan, gate: str, phase: Phase, open_: Sequence[str], seeds: list[int]
    ) -> list[TrialSpec]:
        ctx, request = self.ctx, self.ctx.request
        own: Phase = "confirmation" if gate == "confirmation" else gate  # type: ignore[assignment]
        runs: list[tuple[str, Phase, dict[str, Any]]] = [(arms.BASELINE, phase, {})]
        runs += [(a, own, arms.arm_changes(request, plan, a, ctx.state.tuned)) for a in open_]
        tag = "t" if gate == "confirmation" else "s"
        specs = arms.seeded_trials(ctx.id, request, plan, runs, seeds, tag)
        # An arm measured at full fidelity is estimated at what it cost: one with 4x the
        # baseline's widths runs about 4x as long though its epochs say 1x. A merge not yet
        # run is estimated from its parts (``arms.merged_cost``).
        costs = ctx.state.arm_costs
        merges = workflow.patched("arm-cost-basis")
        return [
            s.model_copy(update={"estimated_device_hours": s.estimated_device_hours * costs[s.arm]})
            if self._measured(s)
            else s.model_copy(
                update={
                    "estimated_device_hours": s.estimated_device_hours
                    * arms.merged_cost(s.arm, request, plan, costs)
                }
            )
            if merges and s.arm.startswith("c-")
            else s
            for s in specs
        ]

    # ---- what arms cost -----------------------------------------------------------------

    def _note_costs(self, specs: Sequence[TrialSpec]) -> None:
        """Keep what each of ``specs`` run at full fidelity cost over its estimate (campaigns
        started before arms' costs were measured keep their estimates' ways)."""
        ctx = self.ctx
        if not workflow.patched("measured-arm-costs"):
            return
        costs = ctx.state.arm_costs
        # Over the estimate an arm's gate runs start from (the plan's trial scaled by its
        # epochs, ``arms.trial_spec``). A screened run's own estimate also holds the cost
        # model's factor: measured over that, a move costing 3x, rightly estimated, read 1x,
        # and its gate's looks were budgeted at a third of what they cost.
        basis = workflow.patched("arm-cost-basis")
        plan = ctx.state.plan
        measured = {
            spec.arm: t.device_hours / arms.basis_estimate(ctx.request, plan, spec)
            if basis and plan is not None
            # Over the estimate before any measurement: a measured arm's spec holds its cost.
            else t.device_hours / t.estimated_device_hours * costs.get(spec.arm, 1.0)
            if self._measured(spec)
            else t.device_hours / t.estimated_device_hours
            for spec in specs
            if spec.data_fraction >= 1.0
            and (t := ctx.state.trial(spec.trial_id)) is not None
            and t.state == "succeeded"
            and t.estimated_device_hours > 0
        }
        if measured:
            ctx.set(arm_costs={**ctx.state.arm_costs, **measured})

    def _measured(self, spec: TrialSpec) -> bool:
        """Whether ``spec``'s estimate is its arm's measured cost (``_look_trials``): a
        gate's run at full fidelity of an arm that ran at full fidelity before."""
        return spec.data_fraction >= 1.0 and spec.arm in self.ctx.state.arm_costs

    def _gating_cost(self, plan: Plan, arm: str) -> float:
        """What gating ``arm`` costs at its first look and confirming it at the
        confirmation's first look, with the baseline's runs not yet made, as measured so far."""
        request = self.ctx.request
        xp = plan.exploration
        assert xp is not None
        first = arms.gate_seeds(request, xp.first_look_seeds)
        looks = [
            self._look_trials(plan, "exploitation", "baseline", [arm], first),
            self._look_trials(
                plan,
                "confirmation",
                "confirmation",
                [arm],
                arms.confirmation_seeds(request, request.seeds),
            ),
        ]
        return sum(self._cost(s) for look in looks for s in look)

    # ---- the budget -------------------------------------------------------------------------

    def _confirmable(self, plan: Plan, ranked: list[str], top: int) -> int:
        """How many to confirm: ``top`` when the budget left affords each of them and the
        baseline the plan's ``max_seeds``, else only the most certain one. Confirming a second
        at fewer seeds costs the first both seeds and half its alpha, and a close second
        mostly shares the first's changes."""
        xp = plan.exploration
        assert xp is not None
        cost = (1 + top) * xp.max_seeds * self._full_trial()
        if workflow.patched("confirm-at-measured-costs"):
            # At what the candidates' runs cost. Costed at a baseline trial (corrected by an
            # average the screen's over-estimated points pulled down), synthetic-undertrained
            # s0 confirmed nothing with 14 s left and a +20% tuned move in hand: its look
            # alone at 3 seeds costs about 11 s, with the second candidate about 18 s.
            seeds = arms.confirmation_seeds(self.ctx.request, xp.max_seeds)
            looks = self._look_trials(plan, "confirmation", "confirmation", ranked[:top], seeds)
            cost = sum(self._cost(s) for s in looks)
        return top if cost <= self.ctx.state.ledger.remaining else 1

    def _cost_ratio(self) -> float:
        """Actual over estimated cost of the trials finished so far (1 before any)."""
        state = self.ctx.state
        if state.spent_estimated <= 0:
            return 1.0
        return max(0.5, min(state.ledger.spent / state.spent_estimated, 4.0))

    def _evidence_reserve(self, plan: Plan) -> float:
        """What exploration leaves for evidence: a first look at the gate and the confirmation."""
        xp = plan.exploration
        assert xp is not None
        k = self.ctx.request.seeds
        gate = (1 + xp.gate_candidates) * xp.first_look_seeds
        return (gate + (1 + min(xp.confirm_top, xp.gate_candidates)) * k) * self._full_trial()

    def _confirmation_reserve(self, plan: Plan, candidates: Sequence[str] = ()) -> float:
        """What a gate leaves for the confirmation's first look: the baseline and the most
        it confirms, at the baseline's cost or, where arms were measured, at the cost of
        the dearest of ``candidates``."""
        xp = plan.exploration
        assert xp is not None
        request = self.ctx.request
        confirmed = min(xp.confirm_top, xp.gate_candidates)
        baseline = (1 + confirmed) * request.seeds * self._full_trial()
        if not candidates or not self.ctx.state.arm_costs:
            return baseline
        # The confirmation's first look at the dearest of them, as measured.
        seeds = arms.confirmation_seeds(request, request.seeds)
        looks = [
            self._look_trials(plan, "confirmation", "confirmation", [a], seeds) for a in candidates
        ]
        costs = sorted((sum(self._cost(s) for s in look[1:]) for look in looks), reverse=True)
        dearest = request.seeds * self._full_trial() + sum(costs[:confirmed])
        return max(baseline, dearest)

    def _search_reserve(self, plan: Plan, gate: str) -> float:
        """What a gate ahead of the whole-space search leaves it when sizing its seeds beyond
        the first look: the plan's tuning budget, as trials cost so far. Gates once grew into
        it (three candidates at about +1% to 8 seeds) and the search that finds combinations
        of knobs got nothing in 12 of 27 benchmark campaigns."""
        xp = plan.exploration
        assert xp is not None
        ahead = gate in ("validation", "combination") and self.ctx.state.search_rounds == 0
        if not ahead or not workflow.patched("search-keeps-its-share"):
            return 0.0
        return xp.tuning_device_hours * self._cost_ratio()

    def _full_trial(self) -> float:
        plan = self.ctx.state.plan
        per_trial = plan.estimated_device_hours_per_trial if plan else 0.0
        return per_trial * self.ctx.request.devices_per_trial * self._cost_ratio()

    def _within_budget(
        self, specs: list[TrialSpec], reserve: float, ratio: float | None = None
    ) -> list[TrialSpec]:
        """The first of ``specs`` (in order) whose cost, corrected by what trials actually
        cost so far (or by ``ratio``), fits what is left after ``reserve``; those already run
        cost nothing."""
        left = self.ctx.state.ledger.remaining - reserve
        kept: list[TrialSpec] = []
        for spec in specs:
            cost = self._cost(spec, ratio)
            if cost > left + 1e-12:
                break
            left -= cost
            kept.append(spec)
        return kept

    def _cost(self, spec: TrialSpec, ratio: float | None = None) -> float:
        """What ``spec`` will cost: nothing when it already ran; else its estimate corrected
        by what trials actually cost so far (or by ``ratio``), except that a measured arm's
        estimate (``_measured``) is its cost already and takes only what ``ratio`` adds."""
        if self.ctx.state.trial(spec.trial_id):
            return 0.0
        ordinary = self._cost_ratio()
        ratio = ratio or ordinary
        factor = ratio / ordinary if self._measured(spec) else ratio
        return spec.estimated_device_hours * factor

    def _tuning_ratio(self) -> float | None:
        """What a tuned trial's estimate (the plan's trial, scaled by its epochs) is corrected
        by: at least what the baseline cost over the same estimate. The average over every
        trial so far falls below it where the screen's dear points cost less than the cost
        model said: on synthetic-undertrained s0 the four tuned trials of a round, run
        through rather than stopped after an epoch, were all cut at their cap, with no value."""
        baseline = self.ctx.state.arm_costs.get(arms.BASELINE)
        if baseline is None or not workflow.patched("prune-where-it-saves"):
            return None
        return max(self._cost_ratio(), baseline)

    def _capped(
        self, specs: list[TrialSpec], most: float | None = None, ratio: float | None = None
    ) -> list[TrialSpec]:
        """``specs``, each stopping past ``COST_CAP`` times its estimate corrected by what
        trials cost so far (or by ``ratio``), and past ``most`` device-hours when given."""
        ratio = ratio or self._cost_ratio()
        out = []
        for spec in specs:
            cap = screening.COST_CAP * spec.estimated_device_hours * ratio
            cap = min(cap, most) if most else cap
            out.append(spec.model_copy(update={"max_device_hours": cap}) if cap > 0 else spec)
        return out

    def _archive(self, decided: Callable[[TrialSummary], bool]) -> None:
        """Drop finished, decided trials from the state (the store keeps them all)."""
        ctx = self.ctx
        keep = [t for t in ctx.state.trials if t.state == "running" or not decided(t)]
        dropped = len(ctx.state.trials) - len(keep)
        if dropped:
            ctx.set(trials=keep, trials_archived=ctx.state.trials_archived + dropped)
