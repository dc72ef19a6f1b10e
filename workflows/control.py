"""What the campaign's updates and control signals do: approve, resolve an escalated trial,
extend the budget, and pause, resume and stop (as updates and as signals).

The updates (``pause``, ``resume``, ``stop``) answer: their validators (``refusals``) refuse
anyone who is not an approver or operator, so the caller hears why. The signals of the same
names are kept for older clients: a signal cannot answer, so one that does not parse, or comes
from someone who may not steer the campaign, is ignored and the reason kept in
``CampaignStatus.ignored_signals`` (the last ``KEPT_IGNORED``), never a failed workflow task.
"""

from temporalio import workflow
from temporalio.exceptions import ApplicationError

with workflow.unsafe.imports_passed_through():
    from contracts import (
        Approval,
        ApproveInput,
        ControlInput,
        ControlResult,
        Escalation,
        ExtendBudgetInput,
        IgnoredSignal,
        Ledger,
        ResolveTrialInput,
    )
    from workflows import refusals
    from workflows.context import CampaignContext, control_message

# Ignored signals the status keeps (a sender retrying in a loop must not grow the state).
KEPT_IGNORED = 20


class Control:
    """The effects of the campaign's updates and control signals, once their validators (or,
    for signals, ``from_signal``) have let them through.

    Args:
        ctx: The campaign's context.
    """

    def __init__(self, ctx: CampaignContext) -> None:
        self.ctx = ctx

    def approve(self, approval: ApproveInput) -> Approval:
        """Record the approval, unless there is one already (approving is idempotent)."""
        ctx = self.ctx
        if ctx.state.approval is None:
            planned = ctx.state.plan.budget_device_hours if ctx.state.plan else None
            hours = approval.device_hours or planned or ctx.request.budget.device_hours
            preflight = ctx.state.preflight
            failing = preflight is not None and not preflight.passed
            ctx.set(
                approval=Approval(
                    approver=approval.approver,
                    comment=approval.comment,
                    approved_at=workflow.now(),
                    device_hours=hours,
                    preflight_override=approval.override_preflight if failing else "",
                ),
                ledger=ctx.state.ledger.model_copy(update={"approved": hours}),
                message=f"Approved by {approval.approver}: {hours} device-hours.",
            )
        assert ctx.state.approval is not None
        return ctx.state.approval

    def resolve_trial(self, answer: ResolveTrialInput) -> Escalation:
        """Keep an engineer's answer with its escalation; the trial's waiter acts on it."""
        ctx = self.ctx
        escalations = list(ctx.state.escalations)
        index = max(
            i
            for i, e in enumerate(escalations)
            if e.trial_id == answer.trial_id and e.resolution is None
        )
        escalations[index] = escalations[index].model_copy(update={"resolution": answer})
        ctx.set(
            escalations=escalations,
            message=f"{answer.trial_id}: {answer.action} by {answer.approver}"
            + (f" ({answer.comment})" if answer.comment else "")
            + ".",
        )
        ctx.publish()
        return escalations[index]

    def extend_budget(self, extension: ExtendBudgetInput) -> Ledger:
        """Add device-hours to the approved budget; a campaign halted on budget resumes."""
        ctx = self.ctx
        ctx.halting = False
        ledger = ctx.state.ledger
        ctx.set(
            ledger=ledger.model_copy(update={"approved": ledger.approved + extension.device_hours}),
            needs_attention="",
            message=f"Budget extended by {extension.device_hours} device-hours "
            f"by {extension.approver}.",
        )
        ctx.publish()
        return ctx.state.ledger

    def pause(self, control: ControlInput) -> ControlResult:
        """Launch no new trials until resumed; running trials finish."""
        self.ctx.set(paused=True, message=control_message("Paused", control))
        self.ctx.show_details()
        return self.answer()

    def resume(self, control: ControlInput) -> ControlResult:
        """Launch trials again after a pause."""
        self.ctx.set(paused=False, message=control_message("Resumed", control))
        self.ctx.show_details()
        return self.answer()

    def stop(self, control: ControlInput) -> ControlResult:
        """Stop: running trials checkpoint and stop; the campaign reports what it learned."""
        self.ctx.request_stop(control_message("Stopped", control))
        return self.answer()

    def answer(self) -> ControlResult:
        s = self.ctx.state
        return ControlResult(
            phase=s.phase, paused=s.paused, stopping=self.ctx.stopping, message=s.message
        )

    def from_signal(self, verb: str, sent: tuple[object, ...]) -> ControlInput | None:
        """A control signal's input when the campaign should act on it; otherwise None, with
        the reason recorded.

        A sender who may not steer the campaign is ignored only behind the patch
        ``approver-only-signals``: campaigns that acted on such signals before replay as
        they ran.
        """
        try:
            control = refusals.parse(ControlInput, sent, verb)
        except ApplicationError as err:
            self.ignore(verb, err.message, sent)
            return None
        why = refusals.control_refusal(self.ctx, verb, control.by)
        if why and workflow.patched("approver-only-signals"):
            self.ignore(verb, why, sent)
            return None
        return control

    def ignore(self, signal: str, reason: str, sent: tuple[object, ...]) -> None:
        """Keep why a signal changed nothing; the campaign's message says so too."""
        first = sent[0] if len(sent) == 1 else None
        by = first.get("by") if isinstance(first, dict) else None
        ignored = IgnoredSignal(
            signal=signal,
            by=by if isinstance(by, str) else "",
            reason=reason,
            at=workflow.now(),
        )
        kept = [*self.ctx.state.ignored_signals, ignored][-KEPT_IGNORED:]
        self.ctx.set(ignored_signals=kept, message=f"Ignored the {signal} signal: {reason}.")
        self.ctx.show_details()
