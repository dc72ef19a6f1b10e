"""Why an update is refused: the checks behind the campaign's update validators.

Validators run before anything is written to history: a refused update leaves no trace, so a
stray click from a Slack bot costs nothing. Each refusal is a non-retryable ``ApplicationError``
whose type a client can match (``ERRORS`` lists them all; docs/api.md's table is checked
against it) and whose message names the field, the update and the fix.

Handlers take their input as the client sent it (plain JSON) and parse it here, so that a
malformed one (a wrong type, an unknown or missing field, no argument at all, ``null``) is
refused as ``InvalidInput`` naming the field, like every other refusal, instead of surfacing
as the SDK's decoding error or a Python ``TypeError``.
"""

from typing import TypeVar

from pydantic import BaseModel, ValidationError
from temporalio import workflow
from temporalio.exceptions import ApplicationError

with workflow.unsafe.imports_passed_through():
    from contracts import (
        ApproveInput,
        ControlInput,
        ExtendBudgetInput,
        ResolveTrialInput,
        RevisePlanInput,
    )
    from workflows import planner
    from workflows.context import CampaignContext, validation_problems

M = TypeVar("M", bound=BaseModel)

# Every error type a client can get from a campaign: the updates' refusals (all of them
# non-retryable), and the two failures that end a campaign. docs/api.md's error table lists
# exactly these (tests/workflows/test_refusals.py).
ERRORS: dict[str, str] = {
    "InvalidInput": "the update's input is malformed: not one JSON object, a wrong type, an "
    "unknown or missing field (the message names it)",
    "NotAnApprover": "the approver (or `by`) is not in the request's `approvers` (for pause, "
    "resume and stop: nor in its `operators`)",
    "NothingToApprove": "no plan is pending approval: still planning, or the campaign ended",
    "AlreadyApproved": "approved before with other `device_hours`; add hours with `extend_budget`",
    "PreflightRunning": "the preflight checklist is running; try again when it has finished",
    "PreflightFailed": "checklist items fail and `override_preflight` gives no reason",
    "NothingToRevise": "no plan is pending approval",
    "NotRevisable": "the plan was made by the fixed planner of campaigns started before the "
    "dual-source planner (`status.planner` is `fixed`); approve or stop it",
    "UnknownHypothesis": "`drop`/`pin` name ids the plan does not have (the message lists "
    "the plan's)",
    "EmptyPlan": "`drop` would leave no hypothesis",
    "NothingToCheck": "no preflight checklist is pending (it runs before approval)",
    "NotEscalated": "`trial_id` is not waiting for an answer (the message lists those that are)",
    "InvalidChanges": "`changes` are not valid `ModelSpec` fields or values",
    "NotApproved": "the plan is not approved yet: approve it with the budget you want",
    "CampaignFinishing": "the campaign is stopping or has ended; start a new one",
    "NotPaused": "`resume` of a campaign that is not paused",
    "AlreadyPaused": "`pause` of a campaign that is already paused",
    "InvalidRequest": "the workflow fails at once: the `CampaignRequest` is malformed (the "
    "message names every bad field)",
    "PlanningFailed": "the workflow fails: planning hit an error no retry can fix (bad data, "
    "a model that cannot be built or cannot fit); the message names the field",
}


def refuse(message: str, type: str) -> ApplicationError:
    assert type in ERRORS, f"{type} is not in refusals.ERRORS (and so not in docs/api.md)"
    return ApplicationError(message, type=type, non_retryable=True)


def parse(model: type[M], sent: tuple[object, ...], handler: str) -> M:
    """The one argument a client sent to update or signal ``handler``, as ``model``.

    Args:
        model: The handler's input contract.
        sent: The arguments as sent, decoded as plain JSON.
        handler: The update's or signal's name, for the message.

    Raises:
        ApplicationError: ``InvalidInput``, naming each bad field.
    """
    if len(sent) != 1:
        raise refuse(
            f"{handler}: expected one argument, a {model.__name__} JSON object, got {len(sent)}",
            "InvalidInput",
        )
    try:
        return model.model_validate(sent[0])
    except ValidationError as err:
        raise refuse(
            f"{handler}: invalid {model.__name__}: {validation_problems(err)}", "InvalidInput"
        ) from None


def check_approver(ctx: CampaignContext, approver: str) -> None:
    if approver not in ctx.request.approvers:
        raise refuse(
            f"approver: {approver!r} may not approve this campaign; "
            f"ask one of {ctx.request.approvers}",
            "NotAnApprover",
        )


def controllers(ctx: CampaignContext) -> list[str]:
    """Who may pause, resume and stop the campaign: its approvers, then its operators."""
    return [
        *ctx.request.approvers,
        *(o for o in ctx.request.operators if o not in ctx.request.approvers),
    ]


def control_refusal(ctx: CampaignContext, verb: str, by: str) -> str:
    """Why ``by`` may not ``verb`` the campaign ("" when they may)."""
    if not by.strip():
        return f"by: say who asks to {verb} (one of {controllers(ctx)})"
    if by not in controllers(ctx):
        return f"by: {by!r} may not {verb} this campaign; ask one of {controllers(ctx)}"
    return ""


def check_control(ctx: CampaignContext, verb: str, control: ControlInput) -> None:
    """The ``pause``, ``resume`` and ``stop`` updates: an approver or operator asks, while
    the campaign can still act on it."""
    if why := control_refusal(ctx, verb, control.by):
        # A missing name is a malformed input; a wrong one, a refusal of that person.
        raise refuse(
            f"{verb}: {why}", "InvalidInput" if not control.by.strip() else "NotAnApprover"
        )
    if verb == "stop":
        return  # stopping a stopping campaign answers its state: nothing to refuse
    if ctx.stopping or ctx.state.phase in ("done", "stopped", "failed"):
        raise refuse(
            f"the campaign is finishing (phase {ctx.state.phase!r}); there is nothing to {verb}",
            "CampaignFinishing",
        )
    if verb == "pause" and ctx.state.paused:
        raise refuse(
            f"already paused ({ctx.state.message}); resume it with the resume update "
            f"(`rea campaign resume {ctx.id} --as NAME`)",
            "AlreadyPaused",
        )
    if verb == "resume" and not ctx.state.paused:
        raise refuse(
            "the campaign is not paused; nothing to resume (the status query's `paused` says "
            "whether it is)",
            "NotPaused",
        )


def check_approve(ctx: CampaignContext, approval: ApproveInput) -> None:
    check_approver(ctx, approval.approver)
    first = ctx.state.approval
    if first is not None:
        if approval.device_hours is not None and approval.device_hours != first.device_hours:
            raise refuse(
                f"device_hours: already approved with {first.device_hours:g} device-hours "
                f"by {first.approver}; add hours with the extend_budget update "
                f"(`rea campaign extend-budget {ctx.id} --as NAME --hours H`)",
                "AlreadyApproved",
            )
        return
    if ctx.state.phase != "awaiting_approval":
        raise refuse(
            f"no plan is pending approval (phase is {ctx.state.phase!r}); approve once the "
            f"status query's phase is awaiting_approval (`rea campaign status {ctx.id}`)",
            "NothingToApprove",
        )
    if ctx.rechecking:
        raise refuse(
            "the preflight checklist is running again; approve when it has finished",
            "PreflightRunning",
        )
    preflight = ctx.state.preflight
    if preflight is not None and not approval.override_preflight and unmet(ctx, approval):
        raise refuse(
            f"{preflight.summary()}. Fix it and check again with the recheck_preflight update "
            f"(`rea campaign preflight {ctx.id}`), or approve with override_preflight: REASON "
            "(`--override-preflight REASON`), kept in the history",
            "PreflightFailed",
        )


def unmet(ctx: CampaignContext, approval: ApproveInput) -> list[str]:
    """The preflight checks that fail for this approval: the cost check is judged at the
    hours approved, so approving the device-hours it asks for meets it."""
    assert ctx.state.preflight is not None
    failed: list[str] = [item.check for item in ctx.state.preflight.failures]
    plan, hours = ctx.state.plan, approval.device_hours
    if "cost" in failed and plan is not None and hours is not None and plan.fits(hours):
        failed.remove("cost")
    return failed


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
            "this campaign's plan was made by the fixed planner (status.planner is 'fixed': "
            "campaigns started before the dual-source planner) and cannot be revised; "
            "approve or stop it",
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
            f"no preflight checklist is pending (phase is {ctx.state.phase!r}); "
            "recheck_preflight runs it again before a plan is approved",
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
            "the plan is not approved yet; approve it (the approve update's device_hours) "
            "with the budget you want instead",
            "NotApproved",
        )
    if ctx.budget_closed or ctx.state.phase in ("done", "stopped", "failed"):
        raise refuse(
            f"the campaign is finishing (phase {ctx.state.phase!r}); start a new one",
            "CampaignFinishing",
        )
