"""The multi-fidelity protocol: explore broadly and cheaply, spend evidence where it decides.

- **Validation** screens a broad pool (every applicable catalog technique, past winners, the
  LLM's proposals, one-knob probes and points drawn from the whole action space) by successive
  halving over data fractions, one seed (``workflows.screening``); the best of the last rung
  go to a gate whose seeds grow only while a candidate's interval straddles the minimum
  effect (``workflows.sequential``).
- **Combination** merges what passed, gated the same way.
- **Exploitation** searches the whole action space around what the screen found (every knob,
  TPE by default, told the screen's full-fidelity results first), pruned by successive
  halving after the epochs where a stop saves half a trial; the best move found is gated.
- **Confirmation** tests the best gated candidates, ranked by the lower end of their
  interval (the best alone unless the budget left gives each the plan's most seeds), on the
  test split with fresh seeds, in one look at as many seeds as the budget left affords (it is
  the last gate: what it does not spend stays unspent), corrected for testing several. When
  nothing passed a gate, what the budget left undecided is confirmed instead: the candidate
  whose gate it stopped with the interval across the minimum effect, or, where it stopped a
  gate before its first look, the best tuned move or the screen's best.

The schedule is sized to the approved budget in the plan (``ExplorationPlan``); a step that
the budget cannot afford, after keeping what the confirmation needs, is skipped and the
proposal says which rule ended the campaign and what it left unspent. Finished screening and
tuning trials leave the state once decided (their values stay in ``rungs`` and ``tuning``;
every trial is in the insights database), so thousands of trials fit in one payload.
"""

import math
from typing import Any

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from contracts import (
        DEFAULT_ACTION_SPACE,
        AskedTrial,
        AskInput,
        Comparison,
        GateDecision,
        KnownPoint,
        LaunchProposal,
        Plan,
        SearchRef,
        SearchSpace,
        TrialSpec,
        direction,
    )
    from workflows import arms, options, phases, proposal, screening, sequential, undecided
    from workflows.gates import SequentialGates

SELECTION_GATES = phases.SELECTION_GATES
# Tuned moves the state keeps (besides the gated ones): the study keeps every one.
KEEP_TUNED = 5
# Tuning goes on past its planned rounds while this share of the planned evidence budget
# stays for the tuned move's gate, the confirmation and more seeds where they decide (when
# the validation gate passed something; see ``_kept_for_evidence``).
EVIDENCE_KEPT = 0.5
MAX_TUNING_ROUNDS_FACTOR = 4


class MultiFidelityProtocol(SequentialGates):
    """Runs the multi-fidelity protocol's phases for one campaign (see the module)."""

    # ---- validation: the screen's rungs, then a sequential gate --------------------------

    async def _validation(self, plan: Plan) -> None:
        ctx, request = self.ctx, self.ctx.request
        assert plan.exploration is not None
        rungs = plan.exploration.rungs
        for rung in range(len(ctx.state.rungs), len(rungs)):
            candidates = screening.rung_arms(plan, ctx.state.rungs, rung)
            runs = screening.rung_trials(ctx.id, request, plan, rung, candidates)
            # No run spends more than the plan budgets the dearest candidate (MAX_SCREEN_COST
            # baseline runs at this rung): a dearer point would be cut, costing without telling.
            most = screening.MAX_SCREEN_COST * runs[0].estimated_device_hours * self._cost_ratio()
            specs = self._within_budget(
                self._capped(runs, most=most), reserve=self._evidence_reserve(plan)
            )
            if len(specs) <= 1:  # the baseline alone screens nothing
                ctx.note("validation", f"the budget left no room for rung {rung + 1}")
                break
            kept = [s.arm for s in specs[1:]]
            ctx.enter(
                "validation",
                f"Screening rung {rung + 1} of {len(rungs)}: {len(kept)} candidates on "
                f"{rungs[rung].data_fraction:.0%} of the training data, one seed.",
            )
            await self.trials.run_batch(specs)
            if ctx.halted():
                return
            self._note_costs(specs)
            decision = screening.decide_rung(request, plan, rung, kept, ctx.state.trials)
            ctx.set(rungs=[*ctx.state.rungs, decision])
            self._archive(lambda t, r=rung: t.trial_id.endswith(f"~r{r}"))  # type: ignore[misc]
        finalists = ctx.state.rungs[-1].promoted if ctx.state.rungs else []
        if len(ctx.state.rungs) < len(rungs):  # the screen did not reach full fidelity
            finalists = []
            if ctx.state.rungs and workflow.patched("partial-screen-finalists"):
                # The gate trains at full fidelity on its seeds: the best of the last rung run
                # go to it rather than nothing (what they measured is the best there is).
                finalists = screening.beat_baseline(
                    ctx.state.rungs[-1], request.metric, plan.exploration.gate_candidates
                )
        await self._sequential_gate(plan, "validation", finalists)

    # ---- combination ------------------------------------------------------------------------

    async def _combination(self, plan: Plan) -> None:
        ctx = self.ctx
        validation = ctx.state.decisions.get("validation")
        groups, skipped = phases.merges(
            plan, validation, skip_repeats=workflow.patched("no-repeated-merges")
        )
        if not groups:
            passed = len(validation.passed) if validation else 0
            why = "merging needs two that passed" if passed < 2 else "every merge conflicts"
            ctx.note("combination", "; ".join([f"no merge: {why}", *skipped]))
            return
        ctx.note("combination", "; ".join(skipped))
        merged = [arms.merge_arm(g) for g in groups]
        ctx.enter("combination", f"Merging {', '.join(merged)}.")
        await self._sequential_gate(plan, "combination", merged)
        decision = ctx.state.decisions.get("combination")
        if decision is not None and validation is not None:
            ctx.set(additivity=phases.additivity(validation, decision))

    # ---- exploitation: the whole action space around what the screen found ----------------

    async def _exploitation(self, plan: Plan) -> None:
        ctx, request = self.ctx, self.ctx.request
        xp = plan.exploration
        assert xp is not None
        per_round = request.budget.max_parallel_trials
        # The planned rounds, and more while the budget beyond evidence's share allows (the
        # screen may have cost less than planned): at most MAX_TUNING_ROUNDS_FACTOR times.
        rounds = MAX_TUNING_ROUNDS_FACTOR * max(1, math.ceil(xp.tuning_trials / per_round))
        study = f"{ctx.id}/tuning"
        if ctx.state.search_rounds < rounds:
            ctx.enter(
                "exploitation",
                f"Searching every knob around the screen's best (about {xp.tuning_trials} "
                f"{request.sampler} trials, pruned by successive halving).",
            )
        keep = kept = self._kept_for_evidence(plan)
        measured = workflow.patched("measured-arm-costs")
        while ctx.state.search_rounds < rounds and not ctx.halted():
            done = ctx.state.search_rounds
            count = per_round
            estimate = count * self._full_trial() * screening.TUNING_COST
            if measured and done:
                # A round costs what the rounds so far cost (the gate of a tuned move comes
                # after the search: the phase's spend is the search's own).
                searched = ctx.state.ledger.phases.get("exploitation")
                spent = searched.spent if searched else 0.0
                estimate = max(estimate, count * spent / (done * per_round))
                # The best move so far gets its gate and confirmation whatever it costs: a
                # dear move found and then not gated for want of budget is a move lost.
                best = self._best_tuned()
                keep = max(kept, self._gating_cost(plan, best)) if best else kept
            if estimate > ctx.state.ledger.remaining - keep:
                ctx.note("exploitation", f"the tuning budget was spent in {done} round(s)")
                break
            asked = await self._ask(plan, study, done, count)
            specs = self._capped(
                [self._tuning_trial(plan, a, study) for a in asked],
                # No trial takes more than a quarter of what tuning may spend.
                most=0.25 * max(xp.tuning_device_hours, ctx.state.ledger.remaining - keep),
                ratio=self._tuning_ratio(),
            )
            await self.trials.run_batch(specs, after=self._tell)
            self._note_costs(specs)
            values = {
                s.arm: t.metric(request.metric)
                for s in specs
                if (t := ctx.state.trial(s.trial_id)) is not None
            }
            ctx.set(tuning={**ctx.state.tuning, **values}, search_rounds=done + 1)
            self._archive(lambda t: t.phase == "exploitation" and t.trial_id.endswith("~x"))
            self._keep_best_tuned()
        if ctx.halted():
            return
        best = self._best_tuned()
        await self._sequential_gate(plan, "exploitation", [best] if best else [])

    def _kept_for_evidence(self, plan: Plan) -> float:
        """What tuning leaves for the evidence still ahead: the tuned move's first look and
        the confirmation's, and, where the validation gate passed something, a share of the
        evidence budget for more seeds where an interval straddles. Nothing passed: no
        candidate needs those seeds, and the budget goes on searching instead of unspent."""
        xp = plan.exploration
        assert xp is not None
        confirmed = self._to_confirm(plan)
        ahead = xp.first_look_seeds * self._full_trial()
        ahead += self._confirmation_reserve(plan, confirmed)
        validation = self.ctx.state.decisions.get("validation")
        if validation is not None and validation.passed:
            return max(ahead, EVIDENCE_KEPT * xp.evidence_device_hours)
        return ahead

    def _to_confirm(self, plan: Plan) -> list[str]:
        """What the confirmation takes if the search finds nothing better (its reserve is
        kept at this one's cost: at the baseline's, a search left 11 trials where confirming
        a dear candidate needed 15, and nothing was confirmed with a quarter left)."""
        if not workflow.patched("keep-the-confirmation-s-cost"):
            return []
        ranked = self._gated_ranked()
        if ranked:
            return ranked[:1]
        found = undecided.best(self.ctx.state, self.ctx.request, plan, self._best_tuned())
        return [found.arm] if found else []

    def _gated_ranked(self) -> list[str]:
        """What passed the selection gates, the highest lower bound first."""
        decisions = self.ctx.state.decisions
        return sequential.by_lower_bound([decisions[g] for g in SELECTION_GATES if g in decisions])

    async def _ask(self, plan: Plan, study: str, done: int, count: int) -> list[AskedTrial]:
        ctx, request = self.ctx, self.ctx.request
        asked: list[AskedTrial] = await workflow.execute_activity(
            "search_ask",
            AskInput(
                study_name=study,
                ask_id=f"round-{done}",
                space=SearchSpace(
                    fields=[k.field for k in DEFAULT_ACTION_SPACE.knobs],
                    center=self._center(plan),
                ),
                sampler=request.sampler,
                seed=request.baseline.seed,
                count=count,
                direction=direction(request.metric),
                known=self._known_points(plan) if done == 0 else [],
                baseline=request.baseline,
            ),
            result_type=list[AskedTrial],
            start_to_close_timeout=options.RECORD_TIMEOUT,
            retry_policy=options.BOOKKEEPING_RETRY,
            summary=f"ask the whole-space study for round {done + 1}",
        )
        baseline = request.baseline.model_dump(mode="json")
        # Only what differs from the baseline: the study keeps the full assignment.
        tuned = {
            arms.tuned_arm(a.number): {k: v for k, v in a.changes.items() if baseline[k] != v}
            for a in asked
        }
        ctx.set(tuned={**ctx.state.tuned, **tuned})
        return asked

    def _tuning_trial(self, plan: Plan, asked: AskedTrial, study: str) -> TrialSpec:
        """A tuned move at full fidelity on the screen's seed, comparable with the last rung."""
        ctx = self.ctx
        spec = arms.trial_spec(
            ctx.id,
            ctx.request,
            plan,
            arm=arms.tuned_arm(asked.number),
            phase="exploitation",
            changes=ctx.state.tuned[arms.tuned_arm(asked.number)],
            seed=arms.screen_seed(ctx.request),
            tag="x",
            search=SearchRef(study_name=study, number=asked.number),
        )
        search = spec.search
        assert search is not None and plan.exploration is not None
        if workflow.patched("prune-where-it-saves"):
            share = plan.exploration.fixed_cost_share
            last = arms.last_prunable_epoch(spec.model.epochs, share)
            search = search.model_copy(update={"last_prunable_epoch": last})
        return spec.model_copy(update={"exploratory": True, "search": search})

    def _center(self, plan: Plan) -> dict[str, Any]:
        """Every knob's value in the screen's best full-data run (the baseline when nothing
        beat it): the search narrows each knob's range around it."""
        ctx, request = self.ctx, self.ctx.request
        last = ctx.state.rungs[-1] if ctx.state.rungs else None
        changes: dict[str, Any] = {}
        if last is not None and last.promoted:
            changes = arms.arm_changes(request, plan, last.promoted[0], ctx.state.tuned)
        spec = request.baseline.with_changes(changes).model_dump(mode="json")
        return {k.field: spec[k.field] for k in DEFAULT_ACTION_SPACE.knobs}

    def _known_points(self, plan: Plan) -> list[KnownPoint]:
        """The last rung's results (and the baseline's), told to the study before it samples."""
        ctx = self.ctx
        if not ctx.state.rungs or len(ctx.state.rungs) < len(plan.exploration.rungs):  # type: ignore[union-attr]
            return []
        last = ctx.state.rungs[-1]
        points = [KnownPoint(changes={}, value=last.baseline)] if last.baseline is not None else []
        for arm, value in last.values.items():
            if value is not None:
                changes = arms.arm_changes(ctx.request, plan, arm, ctx.state.tuned)
                points.append(KnownPoint(changes=changes, value=value))
        return points

    def _best_tuned(self) -> str | None:
        """The tuned move to gate: the best tuning trial, when it beats the screen's best at
        full fidelity on the same seed (else the screen's finalists already stand for it)."""
        ctx, metric = self.ctx, self.ctx.request.metric
        sign = -1.0 if direction(metric) == "maximize" else 1.0
        scored = [(sign * v, arm) for arm, v in ctx.state.tuning.items() if v is not None]
        if not scored:
            return None
        value, arm = min(scored)
        last = ctx.state.rungs[-1] if ctx.state.rungs else None
        screened = [sign * v for v in (last.values.values() if last else []) if v is not None]
        return arm if not screened or value < min(screened) else None

    def _keep_best_tuned(self) -> None:
        """Drop all but the best tuned moves (and the gated ones) from the state: the study
        keeps every one, and a campaign of thousands of tuning trials must fit a payload."""
        ctx, metric = self.ctx, self.ctx.request.metric
        sign = -1.0 if direction(metric) == "maximize" else 1.0
        ranked = sorted(
            (a for a, v in ctx.state.tuning.items() if v is not None),
            key=lambda a: (sign * (ctx.state.tuning[a] or 0.0), a),
        )
        gated = {c.hypothesis_id for d in ctx.state.decisions.values() for c in d.comparisons}
        keep = set(ranked[:KEEP_TUNED]) | gated
        dropped = set(ctx.state.tuned) - keep
        ctx.set(
            tuned={a: c for a, c in ctx.state.tuned.items() if a in keep},
            tuning={a: v for a, v in ctx.state.tuning.items() if a in keep},
            arm_costs={a: c for a, c in ctx.state.arm_costs.items() if a not in dropped},
        )

    # ---- confirmation -----------------------------------------------------------------------

    async def _confirmation(self, plan: Plan) -> None:
        ctx = self.ctx
        assert plan.exploration is not None
        ranked = self._gated_ranked()
        if not ranked and workflow.patched("confirm-the-undecided-best"):
            ranked = self._undecided_best(plan)
        if not ranked:
            ctx.note("confirmation", "nothing passed a gate: there is nothing to confirm")
            return
        top = plan.exploration.confirm_top
        if workflow.patched("budgeted-looks"):
            top = self._confirmable(plan, ranked, top)
        chosen = await self._within_serving_limit(plan, ranked, top)
        if not chosen:
            return
        ctx.enter(
            "confirmation",
            f"Confirming {', '.join(chosen)} against the baseline on the test split, fresh seeds.",
        )
        await self._sequential_gate(plan, "confirmation", chosen)

    def _undecided_best(self, plan: Plan) -> list[str]:
        """What to confirm when no gate passed anything (``workflows.undecided``)."""
        found = undecided.best(self.ctx.state, self.ctx.request, plan, self._best_tuned())
        if found is None:
            return []
        self.ctx.note("confirmation", found.why)
        return [found.arm]

    async def _within_serving_limit(self, plan: Plan, ranked: list[str], top: int) -> list[str]:
        """The best ``top`` of ``ranked`` whose size keeps the request's serving limit."""
        ctx, limit = self.ctx, self.ctx.request.max_size_ratio
        if limit is None:
            return ranked[:top]
        chosen: list[str] = []
        for arm in ranked:
            if len(chosen) == top:
                break
            risks = await self._footprint(plan, arm)
            if max(risks.parameters_ratio, risks.embedding_ratio) <= limit:
                chosen.append(arm)
            else:
                ctx.note(
                    "confirmation",
                    f"{arm} left out: {risks.parameters_ratio:.2f}x the parameters and "
                    f"{risks.embedding_ratio:.2f}x the embeddings, over the {limit:g}x limit",
                )
        return chosen

    # ---- the answer -------------------------------------------------------------------------

    async def _propose(self, plan: Plan) -> None:
        """The launch proposal: the confirmed candidate with the most certain gain."""
        ctx = self.ctx
        confirmation = ctx.state.decisions.get("confirmation")
        if confirmation is not None:
            # The proposal reads the first comparison: the passed one most sure of its gain.
            best_first = sorted(
                confirmation.comparisons,
                key=lambda c: (not c.passed, -(c.gain_low if c.gain_low is not None else -1e9)),
            )
            decisions = {**ctx.state.decisions, "confirmation": _with(confirmation, best_first)}
            ctx.set(decisions=decisions)
        await super()._propose(plan)

    def _account(self, answer: LaunchProposal, plan: Plan) -> LaunchProposal:
        ctx = self.ctx
        why = "stopped" if ctx.stopping else "budget" if ctx.budget_closed else ""
        return proposal.with_account(answer, ctx.request, plan, ctx.state, interrupted=why)


def _with(decision: GateDecision, comparisons: list[Comparison]) -> GateDecision:
    passed = [c.hypothesis_id for c in comparisons if c.passed]
    return decision.model_copy(update={"comparisons": comparisons, "passed": passed})
