"""The first versions' protocol ("single-seed"), kept for the campaigns it started.

Validation runs each planned hypothesis once beside the baseline; combination merges the ones
that beat it. New campaigns run the evidence protocol (``workflows.protocol``); these replay
and finish as they began.
"""

import asyncio
from collections.abc import Callable

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from contracts import CampaignPhase, Plan, TrialSpec
    from workflows import policy
    from workflows.context import CampaignContext
    from workflows.trials import TrialRunner

PHASES: tuple[CampaignPhase, ...] = ("validation", "combination")


class SingleSeedProtocol:
    """Runs the single-seed protocol's phases for one campaign.

    Args:
        ctx: The campaign's context.
        trials: Runs the phases' trials.
    """

    def __init__(self, ctx: CampaignContext, trials: TrialRunner) -> None:
        self.ctx = ctx
        self.trials = trials

    async def run(self, plan: Plan) -> None:
        """The phases from the current one on; hands over to a fresh run when draining."""
        ctx, request = self.ctx, self.ctx.request
        phases: dict[CampaignPhase, Callable[[], list[TrialSpec]]] = {
            "validation": lambda: policy.validation_trials(ctx.id, request, plan),
            "combination": lambda: policy.combination_trials(
                ctx.id, request, plan, ctx.state.trials
            ),
        }
        first = PHASES.index(ctx.state.phase) if ctx.state.phase in phases else 0
        for phase in PHASES[first:]:
            if ctx.stopping or ctx.budget_closed:
                break
            specs = phases[phase]()
            trials = [s for s in specs if ctx.state.trial(s.trial_id) is None]
            note = policy.fewer_than_planned(request, plan, phase, len(specs), ctx.state.trials)
            if note:
                ctx.set(phase_notes={**ctx.state.phase_notes, phase: note})
            ctx.enter(
                phase, f"Running {len(trials)} {phase} trial(s){f' ({note})' if note else '.'}"
            )
            await asyncio.gather(*(self.trials.run(spec) for spec in trials))
            if ctx.draining:
                await ctx.hand_over()
