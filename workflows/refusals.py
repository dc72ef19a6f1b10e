"""Why an update is refused: the checks behind the campaign's update validators.

Validators run before anything is written to history: a refused update leaves no trace, so a
stray click from a Slack bot costs nothing. Each refusal is a non-retryable ``ApplicationError``
whose type a client can match and whose message names the field and the fix.
"""

from pydantic import ValidationError
from temporalio import workflow
from temporalio.exceptions import ApplicationError

with workflow.unsafe.imports_passed_through():
    from contracts import ApproveInput, ExtendBudgetInput, ResolveTrialInput, RevisePlanInput
    from workflows import planner
    from workflows.context import CampaignContext, validation_problems


def refuse(message: str, type: str) -> ApplicationError:
    return ApplicationError(message, type=type, non_retryable=True)


def check_approver(ctx: CampaignContext, approver: str) -> None:
    if approver not in ctx.request.approvers:
        raise refuse(
            f"approver: {approver!r} may not approve this campaign; "
            f"ask one of {ctx.request.approvers}",
            "NotAnApprover",
        )


def check_approve(ctx: CampaignContext, approval: ApproveInput) -> None:
    check_approver(ctx, approval.approver)
    first = ctx.state.approval
    if first is not None:
        if approval.device_hours is not None and approval.device_hours != first.device_hours:
            raise refuse(
                f"device_hours: already approved with {first.device_hours:g} device-hours "
                f"by {first.approver}; add hours with extend_budget "
                "(`rea campaign extend-budget`)",
                "AlreadyApproved",
            )
        return
    if ctx.state.phase != "awaiting_approval":
        raise refuse(
            f"no plan is pending approval (phase is {ctx.state.phase!r}); "
            "approve once `rea campaign status` shows phase awaiting_approval",
            "NothingToApprove",
        )
    if ctx.rechecking:
        raise refuse(
            "the preflight checklist is running again; approve when it has finished",
            "PreflightRunning",
        )
    preflight = ctx.state.preflight
    if preflight is not None and not preflight.passed and not approval.override_preflight:
        raise refuse(
            f"{preflight.summary()}. Fix it and check again with `rea campaign preflight "
            f"{ctx.id}`, or approve with --override-preflight REASON (kept in the history)",
            "PreflightFailed",
        )


def check_revise_plan(ctx: CampaignContext, revision: RevisePlanInput) -> None:
    check_approver(ctx, revision.approver)
    plan = ctx.state.plan
    if ctx.state.phase != "awaiting_approval" or plan is None:
        raise refuse(
            f"no plan is pending approval (phase is {ctx.state.phase!r}); a plan can "
            "only be revised before it is approved",
            "NothingToRevise",
        )
    if ctx.state.planner != "dual-source":
        raise refuse(
            "this campaign's plan was made by the fixed planner of an earlier version and "
            "cannot be revised; approve or stop it",
            "NotRevisable",
        )
    if unknown := planner.unknown_ids(plan, [*revision.drop, *revision.pin]):
        known = ", ".join(h.id for h in [*plan.hypotheses, *plan.held_back])
        raise refuse(
            f"drop/pin: unknown hypothesis id(s) {unknown}; the plan's are: {known}",
            "UnknownHypothesis",
        )
    left = [h for h in plan.hypotheses + plan.held_back if h.id not in revision.drop]
    if not left:
        raise refuse(
            "drop: that would drop every hypothesis; stop the campaign instead", "EmptyPlan"
        )


def check_recheck_preflight(ctx: CampaignContext) -> None:
    if ctx.state.recovery != "runbook" or ctx.state.phase != "awaiting_approval":
        raise refuse(
            f"no preflight checklist is pending (phase is {ctx.state.phase!r}); it runs "
            "before a plan is approved",
            "NothingToCheck",
        )
    if ctx.rechecking:
        raise refuse("the preflight checklist is already running", "PreflightRunning")


def check_resolve_trial(ctx: CampaignContext, answer: ResolveTrialInput) -> None:
    check_approver(ctx, answer.approver)
    open_ = ctx.state.open_escalations
    escalation = next((e for e in open_ if e.trial_id == answer.trial_id), None)
    if escalation is None:
        waiting = ", ".join(e.trial_id for e in open_) or "none"
        raise refuse(
            f"trial_id: {answer.trial_id!r} is not waiting for an answer; escalated trials "
            f"waiting now: {waiting}",
            "NotEscalated",
        )
    if answer.action == "retry" and answer.changes and escalation.model is not None:
        try:
            escalation.model.with_changes(answer.changes)
        except ValidationError as err:
            raise refuse(
                f"changes: {validation_problems(err)}; give ModelSpec fields with valid "
                'values, e.g. {"batch_size": 256}',
                "InvalidChanges",
            ) from None


def check_extend_budget(ctx: CampaignContext, extension: ExtendBudgetInput) -> None:
    check_approver(ctx, extension.approver)
    if ctx.state.approval is None:
        raise refuse(
            "the plan is not approved yet; approve it with the budget you want instead",
            "NotApproved",
        )
    if ctx.budget_closed or ctx.state.phase in ("done", "stopped", "failed"):
        raise refuse(
            f"the campaign is finishing (phase {ctx.state.phase!r}); start a new one",
            "CampaignFinishing",
        )
