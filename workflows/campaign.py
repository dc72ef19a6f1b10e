"""CampaignWorkflow: plan, wait for approval, run trials phase by phase, report the best model.

The workflow only decides and sequences; planning, training and bookkeeping are activities,
called by name so that this module never imports their (torch-heavy) code. While trials run
the workflow sleeps on durable conditions and timers: it holds no worker slot, and a worker or
server restart loses nothing.

This module holds the campaign's life (``run``) and its handlers. The rest lives in rooms it
composes, all sharing one ``CampaignContext`` (``workflows.context``): ``plan_approval``
(plan, preflight, approval), ``protocol`` (the evidence protocol's phases) and
``single_seed`` (the first versions'), ``trials`` (slots, budget, in-worker runs) with
``jobs`` (runs as external jobs) and ``trial_recovery`` (diagnosis, remedies, escalation), and
``refusals`` (the validators' checks). The pure decisions they follow are in ``policy``,
``phases``, ``arms``, ``proposal``, ``planner`` and ``recovery``.
"""

import asyncio
from datetime import timedelta

from pydantic import ValidationError
from temporalio import workflow
from temporalio.exceptions import ApplicationError

with workflow.unsafe.imports_passed_through():
    from contracts import (
        Approval,
        ApproveInput,
        CampaignRequest,
        CampaignResult,
        CampaignStatus,
        ControlInput,
        ControlResult,
        Escalation,
        ExtendBudgetInput,
        JobFinishedInput,
        JobStatus,
        Ledger,
        Plan,
        PreflightReport,
        ResolveTrialInput,
        RevisePlanInput,
    )
    from workflows import options, planner, refusals
    from workflows.context import CampaignContext, validated_request
    from workflows.control import Control
    from workflows.jobs import control_job
    from workflows.multi_fidelity import MultiFidelityProtocol
    from workflows.plan_approval import PlanApproval
    from workflows.protocol import PHASES as EVIDENCE_PHASES
    from workflows.protocol import EvidenceProtocol
    from workflows.single_seed import PHASES as EXECUTOR_PHASES
    from workflows.single_seed import SingleSeedProtocol
    from workflows.trials import TrialRunner

__all__ = ["EVIDENCE_PHASES", "EXECUTOR_PHASES", "CampaignWorkflow"]


# A request that does not validate fails the workflow at once (it names the field) instead of
# failing workflow tasks that Temporal would retry forever.
@workflow.defn(name="CampaignWorkflow", failure_exception_types=[ValidationError])
class CampaignWorkflow:
    """One campaign: improve a metric of a baseline model within an approved budget.

    The second run argument is the state carried over by continue-as-new; clients start a
    campaign with the request alone.
    """

    @workflow.init
    def __init__(self, request: CampaignRequest, state: CampaignStatus | None = None) -> None:
        # The SDK applies type hints only when the payload count matches the parameters, so
        # a client's one-argument start arrives as plain JSON: validate both ways here.
        self._invalid: ApplicationError | None = None
        try:
            request = validated_request(request)
        except ApplicationError as err:
            # Raised from run(): raised here it would fail workflow tasks, retried for ever.
            self._invalid = err
            request = CampaignRequest.model_construct(approvers=[])  # type: ignore[call-arg]
        self._ctx = ctx = CampaignContext(request, state)
        self._planning = PlanApproval(ctx)
        self._trials = TrialRunner(ctx)
        self._control = Control(ctx)

    @workflow.run
    async def run(
        self, request: CampaignRequest, state: CampaignStatus | None = None
    ) -> CampaignResult:
        ctx = self._ctx
        if self._invalid is not None:
            raise ctx.fail(self._invalid)
        try:
            return await self._run()
        except asyncio.CancelledError:
            # Cancelled through Temporal rather than stopped: in-worker trials are cancelled
            # with the workflow, but external jobs run on; stop them (they checkpoint) first.
            ctx.request_stop("Cancelled.")
            await asyncio.gather(
                *(
                    control_job(
                        "stop_job",
                        t.job,
                        JobStatus,
                        f"stop {t.trial_id} (campaign cancelled)",
                        timeout=options.JOB_STOP_TIMEOUT,
                    )
                    for t in ctx.state.trials
                    if t.state == "running" and t.job is not None
                )
            )
            raise

    async def _run(self) -> CampaignResult:
        ctx = self._ctx
        # Decided once, before the first command, and carried by continue-as-new: campaigns
        # started by the single-seed versions replay and finish as they began.
        first_run = ctx.state.runs == 1 and ctx.state.plan is None
        if first_run and workflow.patched("evidence-gate"):
            ctx.set(protocol="evidence")
        if first_run and workflow.patched("dual-source-planning"):
            ctx.set(planner="dual-source")
        if first_run and workflow.patched("runbooks"):
            ctx.set(recovery="runbook")
        # Read only in a first run: a campaign continued as new keeps the protocol it chose.
        if (
            first_run
            and ctx.request.protocol == "multi-fidelity"
            and workflow.patched("multi-fidelity")
        ):
            ctx.set(protocol="multi-fidelity")
        plan = ctx.state.plan or await self._planning.make_plan()
        if plan is None:  # stopped while planning
            return ctx.result(None)
        if ctx.state.approval is None:
            if ctx.state.recovery == "runbook" and ctx.state.preflight is None:
                await self._planning.preflight()
            await self._planning.await_approval(plan)
            plan = ctx.state.plan or plan  # as revised before approval
        if ctx.state.protocol != "single-seed":
            return await self._run_evidence(plan)
        # The guardrail timer is a new command: campaigns started before it replay without it.
        guard = None
        if not ctx.stopping and workflow.patched("max-wall-time-guardrail"):
            guard = asyncio.create_task(self._guard_wall_clock())
        await SingleSeedProtocol(ctx, self._trials).run(plan)
        # Let an in-flight approve/ stop handler finish before the workflow completes.
        await workflow.wait_condition(workflow.all_handlers_finished)
        if guard is not None:
            guard.cancel()
        return ctx.result(plan)

    async def _run_evidence(self, plan: Plan) -> CampaignResult:
        """Validation, combination, exploitation and confirmation, then the launch proposal."""
        ctx = self._ctx
        guard = None
        if not ctx.stopping:
            guard = asyncio.create_task(self._guard_wall_clock())
        protocol = (
            MultiFidelityProtocol if ctx.state.protocol == "multi-fidelity" else EvidenceProtocol
        )
        await protocol(ctx, self._trials).run(plan)
        await workflow.wait_condition(workflow.all_handlers_finished)
        if guard is not None:
            guard.cancel()
        result = ctx.result(plan)
        await ctx.record()
        return result

    async def _guard_wall_clock(self) -> None:
        """Stop the campaign once it has run ``max_wall_hours`` since approval."""
        ctx = self._ctx
        assert ctx.state.approval is not None
        limit = timedelta(hours=ctx.request.budget.max_wall_hours)
        left = ctx.state.approval.approved_at + limit - workflow.now()
        if left > timedelta(0):
            await workflow.sleep(left, summary="max wall time guardrail")
        ctx.request_stop(f"Stopped: max wall time of {limit} reached.")

    # ---- handlers -------------------------------------------------------------------------
    # Every update and signal takes its input as sent (``*sent``: the SDK decodes varargs as
    # plain JSON) and parses it with ``refusals.parse``: a malformed input is refused as
    # InvalidInput naming the field (updates) or ignored with the reason in the status
    # (signals), never a decoding error, a TypeError or a failed workflow task.

    @workflow.query
    def status(self) -> CampaignStatus:
        """Where the campaign is: phase, plan, approval, trials, best metric, ledger."""
        ctx = self._ctx
        s = ctx.state
        preflight_running = ctx.rechecking or (
            s.phase == "planning" and s.recovery == "runbook" and s.plan is not None
        )
        return (
            s.model_copy(update={"preflight_running": preflight_running})
            if preflight_running
            else s
        )

    @workflow.update
    def approve(self, *sent: object) -> Approval:
        """Approve the pending plan (an ``ApproveInput``).

        Idempotent: approving again (with no hours, or the same hours) returns the first
        approval unchanged, whoever asks; asking for other hours is refused by the validator
        (that is what ``extend_budget`` is for).
        """
        return self._control.approve(refusals.parse(ApproveInput, sent, "approve"))

    @approve.validator
    def _validate_approve(self, *sent: object) -> None:
        refusals.check_approve(self._ctx, refusals.parse(ApproveInput, sent, "approve"))

    @workflow.update
    def revise_plan(self, *sent: object) -> Plan:
        """Change the pending plan (a ``RevisePlanInput``): drop or pin hypotheses, plan for
        another budget. The planner re-ranks the plan's own candidates (planned and held
        back); the revised plan is what the engineer then approves.
        """
        revision = refusals.parse(RevisePlanInput, sent, "revise_plan")
        ctx = self._ctx
        assert ctx.state.plan is not None
        plan = planner.revise(ctx.request, ctx.state.plan, revision, task=ctx.state.task)
        self._planning.set_plan(
            plan,
            message=f"Plan revised by {revision.approver}: {len(plan.hypotheses)} hypotheses, "
            f"estimated {plan.estimated_device_hours:.4g} device-hours.",
        )
        ctx.publish()
        return plan

    @revise_plan.validator
    def _validate_revise_plan(self, *sent: object) -> None:
        revision = refusals.parse(RevisePlanInput, sent, "revise_plan")
        refusals.check_revise_plan(self._ctx, revision)

    @workflow.update
    async def recheck_preflight(self, *sent: object) -> PreflightReport:
        """Run the preflight checklist again (after fixing what it found). A plan made while
        the data could not be read is made again first, now that its cost can be measured."""
        ctx = self._ctx
        ctx.rechecking = True
        try:
            plan = ctx.state.plan
            if plan is not None and plan.estimated_device_hours_per_trial == 0.0:
                await self._planning.propose_plan()
            await self._planning.preflight()
            assert ctx.state.plan is not None
            self._planning.ask_for_approval(ctx.state.plan)
        finally:
            ctx.rechecking = False
        assert ctx.state.preflight is not None
        return ctx.state.preflight

    @recheck_preflight.validator
    def _validate_recheck_preflight(self, *sent: object) -> None:
        # Anyone may run the checklist again (a ControlInput, ``{}`` will do).
        refusals.parse(ControlInput, sent, "recheck_preflight")
        refusals.check_recheck_preflight(self._ctx)

    @workflow.update
    def resolve_trial(self, *sent: object) -> Escalation:
        """An engineer's answer to an escalated trial (a ``ResolveTrialInput``): retry it (as
        it is or with changes), skip it, or stop the campaign. The trial's waiter acts on it."""
        return self._control.resolve_trial(refusals.parse(ResolveTrialInput, sent, "resolve_trial"))

    @resolve_trial.validator
    def _validate_resolve_trial(self, *sent: object) -> None:
        answer = refusals.parse(ResolveTrialInput, sent, "resolve_trial")
        refusals.check_resolve_trial(self._ctx, answer)

    @workflow.update
    def extend_budget(self, *sent: object) -> Ledger:
        """Add device-hours to the approved budget (an ``ExtendBudgetInput``); a campaign
        halted on budget resumes."""
        return self._control.extend_budget(refusals.parse(ExtendBudgetInput, sent, "extend_budget"))

    @extend_budget.validator
    def _validate_extend_budget(self, *sent: object) -> None:
        extension = refusals.parse(ExtendBudgetInput, sent, "extend_budget")
        refusals.check_extend_budget(self._ctx, extension)

    # pause, resume and stop: updates that answer (or refuse), and signals of the same names
    # for older clients (ignored, with the reason kept, when they may not act).

    @workflow.update(name="pause")
    def pause_campaign(self, *sent: object) -> ControlResult:
        """Launch no new trials until resumed; running trials finish (a ``ControlInput``)."""
        return self._control.pause(refusals.parse(ControlInput, sent, "pause"))

    @pause_campaign.validator
    def _validate_pause(self, *sent: object) -> None:
        refusals.check_control(self._ctx, "pause", refusals.parse(ControlInput, sent, "pause"))

    @workflow.update(name="resume")
    def resume_campaign(self, *sent: object) -> ControlResult:
        """Launch trials again after a pause (a ``ControlInput``)."""
        return self._control.resume(refusals.parse(ControlInput, sent, "resume"))

    @resume_campaign.validator
    def _validate_resume(self, *sent: object) -> None:
        refusals.check_control(self._ctx, "resume", refusals.parse(ControlInput, sent, "resume"))

    @workflow.update(name="stop")
    def stop_campaign(self, *sent: object) -> ControlResult:
        """Stop: running trials checkpoint and stop; the campaign ends in phase ``stopped``
        with its result so far (a ``ControlInput``). Stopping again answers the same."""
        return self._control.stop(refusals.parse(ControlInput, sent, "stop"))

    @stop_campaign.validator
    def _validate_stop(self, *sent: object) -> None:
        refusals.check_control(self._ctx, "stop", refusals.parse(ControlInput, sent, "stop"))

    @workflow.signal
    def pause(self, *sent: object) -> None:
        """Older clients' pause (the ``pause`` update answers)."""
        if control := self._control.from_signal("pause", sent):
            self._control.pause(control)

    @workflow.signal
    def resume(self, *sent: object) -> None:
        """Older clients' resume (the ``resume`` update answers)."""
        if control := self._control.from_signal("resume", sent):
            self._control.resume(control)

    @workflow.signal
    def stop(self, *sent: object) -> None:
        """Older clients' stop (the ``stop`` update answers)."""
        if control := self._control.from_signal("stop", sent):
            self._control.stop(control)

    @workflow.signal
    def job_finished(self, *sent: object) -> None:
        """An external job reports its result (a ``JobFinishedInput``; stale reports of
        earlier launches are ignored).

        A report can arrive before the campaign has seen its launch complete (a job that
        ends within moments, a busy worker): it is kept by job id until the launch is seen,
        rather than dropped for the fallback poll to find a minute later.
        """
        ctx = self._ctx
        try:
            finished = refusals.parse(JobFinishedInput, sent, "job_finished")
        except ApplicationError as err:
            self._control.ignore("job_finished", err.message, sent)
            return
        trial = ctx.state.trial(finished.trial_id)
        if trial is None:
            return
        if trial.job is not None and trial.job.job_id == finished.job_id:
            ctx.job_results[finished.trial_id] = finished.result
        elif workflow.patched("early-job-reports"):
            ctx.early_job_reports[finished.job_id] = finished.result
