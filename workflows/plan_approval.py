"""Before the first trial: make the plan, run its preflight checklist, wait for approval.

The sources propose through activities (``propose_hypotheses``, ``propose_hypotheses_llm``);
the pure planner (``workflows.planner``) merges them into the plan an engineer approves. Each
planning activity is started rather than executed, so that a stop ends a campaign stuck in it.
"""

from typing import Any

from temporalio import workflow
from temporalio.exceptions import ActivityError, ApplicationError

with workflow.unsafe.imports_passed_through():
    from contracts import (
        Notification,
        PhaseLedger,
        Plan,
        PlanningInput,
        PreflightInput,
        PreflightItem,
        PreflightReport,
        ProposalInput,
        Proposals,
    )
    from workflows import options, phases, planner, screening
    from workflows.context import CampaignContext, error_message


# Catalog techniques (and their combinations) a screen's pool may take from the knowledge
# agent: all that apply.
MAX_SCREENED = 200


class PlanApproval:
    """Plans the campaign and asks for its approval.

    Args:
        ctx: The campaign's context.
    """

    def __init__(self, ctx: CampaignContext) -> None:
        self.ctx = ctx

    async def make_plan(self) -> Plan | None:
        """Plan the campaign; None when it is stopped first.

        Raises:
            ApplicationError: planning failed for good (bad data, a spec that cannot be built
                or cannot fit): the campaign fails, its status naming the error.
        """
        ctx = self.ctx
        ctx.enter("planning", "Proposing hypotheses and estimating their cost.")
        if ctx.state.planner == "dual-source":
            return await self.propose_plan()
        handle = workflow.start_activity(
            "plan_campaign",
            PlanningInput(campaign_id=ctx.id, request=ctx.request),
            result_type=Plan,
            start_to_close_timeout=options.PLANNING_TIMEOUT,
            retry_policy=options.PLANNING_RETRY,
            summary="propose hypotheses and estimate cost",
        )
        if not await self._unless_stopped(handle):
            return None
        try:
            plan: Plan = await handle
        except ActivityError as err:
            raise self._planning_failed(err) from err
        if ctx.state.protocol == "evidence":
            plan = phases.with_phases(ctx.request, plan)
        self.set_plan(plan)
        return plan

    async def propose_plan(self) -> Plan | None:
        """Both sources propose (the knowledge agent with what history says, then the LLM agent
        with the same task and insights); the planner merges them. None when stopped first.

        Raises:
            ApplicationError: the knowledge source failed for good (bad data, a baseline that
                cannot be built or fit): the campaign fails. The LLM agent failing is not
                fatal: the plan says so and goes on without it.
        """
        ctx, request = self.ctx, self.ctx.request
        screen = ctx.state.protocol == "multi-fidelity"
        inp = ProposalInput(
            campaign_id=ctx.id,
            request=request,
            # A screen tries every applicable technique; a fixed plan picks from a few.
            max_hypotheses=MAX_SCREENED if screen else 2 * request.max_hypotheses,
            # The preflight checklist reports unreadable data and blocks approval until it
            # is fixed (or overridden); the campaign does not fail on it.
            allow_unreadable_data=ctx.state.recovery == "runbook",
        )
        handle = workflow.start_activity(
            "propose_hypotheses",
            inp,
            result_type=Proposals,
            start_to_close_timeout=options.PLANNING_TIMEOUT,
            retry_policy=options.PLANNING_RETRY,
            summary="knowledge agent: task, insights, cost and hypotheses",
        )
        if not await self._unless_stopped(handle):
            return None
        try:
            knowledge: Proposals = await handle
        except ActivityError as err:
            raise self._planning_failed(err) from err
        llm_handle = workflow.start_activity(
            "propose_hypotheses_llm",
            inp.model_copy(
                update={
                    "task": knowledge.task,
                    "insights": knowledge.insights,
                    "max_hypotheses": 2 * request.max_hypotheses,
                }
            ),
            result_type=Proposals,
            start_to_close_timeout=options.LLM_TIMEOUT,
            retry_policy=options.LLM_RETRY,
            summary="LLM agent: hypotheses from the same task and insights",
        )
        if not await self._unless_stopped(llm_handle):
            return None
        try:
            llm: Proposals = await llm_handle
        except ActivityError as err:
            llm = Proposals(
                source="llm",
                note=f"the LLM agent failed ({error_message(err)}); planned without it",
            )
        if screen:
            space = await self._space_points(inp)
            if space is None:
                return None
            plan = planner.build_screen_plan(request, [knowledge, llm, space])
        else:
            plan = planner.build_plan(request, [knowledge, llm])
        self.set_plan(plan, task=knowledge.task)
        await ctx.record()
        return plan

    async def _space_points(self, inp: ProposalInput) -> Proposals | None:
        """The action space's probes and draws for the screen; None when stopped first."""
        handle = workflow.start_activity(
            "propose_space_points",
            # Only what the screen can measure: a candidate dearer than its cap is stopped
            # before it tells anything (on a small baseline nearly all of the whole box is).
            inp.model_copy(
                update={
                    "max_hypotheses": screening.MAX_POOL,
                    "max_cost_factor": screening.MAX_SCREEN_COST,
                }
            ),
            result_type=Proposals,
            start_to_close_timeout=options.PLANNING_TIMEOUT,
            retry_policy=options.PLANNING_RETRY,
            summary="the action space: one-knob probes and random points",
        )
        if not await self._unless_stopped(handle):
            return None
        try:
            space: Proposals = await handle
        except ActivityError as err:
            raise self._planning_failed(err) from err
        return space

    async def _unless_stopped(self, handle: workflow.ActivityHandle[Any]) -> bool:
        """Wait for a planning activity; False (and the activity cancelled) when the campaign
        is stopped first."""
        await workflow.wait_condition(lambda: handle.done() or self.ctx.stopping)
        if not handle.done():
            handle.cancel()
            return False
        return True

    def _planning_failed(self, err: ActivityError) -> ApplicationError:
        return self.ctx.fail(
            ApplicationError(
                f"planning failed: {error_message(err)}",
                type="PlanningFailed",
                non_retryable=True,
            )
        )

    def set_plan(self, plan: Plan, **changes: object) -> None:
        """Adopt ``plan``: the ledger's per-phase estimates follow it."""
        ctx = self.ctx
        estimates = {p.phase: PhaseLedger(estimated=p.estimated_device_hours) for p in plan.phases}
        ledger = ctx.state.ledger.model_copy(update={"phases": estimates})
        ctx.set(plan=plan, ledger=ledger, **changes)

    async def preflight(self) -> None:
        """Run the preflight checklist on the current plan; its report goes with the approval
        request. A checklist that cannot run at all is reported as a failed item."""
        ctx = self.ctx
        assert ctx.state.plan is not None
        ctx.set(message="Preflight: data, specs, one training step, memory, cost, access.")
        ctx.publish()
        handle = workflow.start_activity(
            "preflight_campaign",
            PreflightInput(campaign_id=ctx.id, request=ctx.request, plan=ctx.state.plan),
            result_type=PreflightReport,
            start_to_close_timeout=options.PREFLIGHT_TIMEOUT,
            heartbeat_timeout=options.PREFLIGHT_HEARTBEAT,
            retry_policy=options.PLANNING_RETRY,
            summary="preflight checklist",
        )
        if not await self._unless_stopped(handle):
            return
        try:
            report: PreflightReport = await handle
        except ActivityError as err:
            report = PreflightReport(
                items=[
                    PreflightItem(
                        check="data",
                        ok=False,
                        detail=f"the checklist could not run: {error_message(err)}",
                        fix="fix the error, then `rea campaign preflight` to check again",
                    )
                ]
            )
        ctx.set(preflight=report, message=report.summary())

    async def await_approval(self, plan: Plan) -> None:
        """Ask for approval (status, search attributes, Slack) and wait for it or a stop."""
        ctx = self.ctx
        self.ask_for_approval(plan)
        if not ctx.stopping:
            await ctx.notify(
                Notification(
                    campaign_id=ctx.id,
                    kind="plan_awaiting_approval",
                    goal=ctx.request.goal,
                    approvers=ctx.request.approvers,
                    hypotheses=[f"{h.id}: {h.title}" for h in plan.hypotheses],
                    estimated_device_hours=plan.estimated_device_hours,
                    budget_device_hours=plan.budget_device_hours or ctx.request.budget.device_hours,
                    preflight=ctx.state.preflight,
                )
            )
        await workflow.wait_condition(
            lambda: ctx.state.approval is not None or ctx.stopping,
            timeout_summary="waiting for an engineer to approve the plan",
        )
        ctx.set(needs_attention="")

    def ask_for_approval(self, plan: Plan) -> None:
        ctx = self.ctx
        approvers = ", ".join(ctx.request.approvers)
        preflight = ctx.state.preflight
        blocked = f"; {preflight.summary()}" if preflight and not preflight.passed else ""
        ctx.set(needs_attention=f"plan awaits approval by one of {approvers}{blocked}")
        ctx.enter(
            "awaiting_approval",
            f"Waiting for approval by one of {approvers}: {len(plan.hypotheses)} hypotheses, "
            f"estimated {plan.estimated_device_hours:.4f} of "
            f"{ctx.request.budget.device_hours} device-hours"
            + (f"; {preflight.summary()}." if preflight else "."),
        )
