"""The campaign's context: its request and state, what its parts share, and how it shows itself.

Every room of the campaign (planning, the protocols, the trial runner, recovery, the handlers)
reads and changes the campaign through one ``CampaignContext``. It sits below all of them, so
that publishing, notifying and stopping need no circle between the rooms that use them.
"""

from typing import Any

from pydantic import ValidationError
from temporalio import workflow
from temporalio.common import SearchAttributeUpdate
from temporalio.exceptions import ActivityError, ApplicationError

with workflow.unsafe.imports_passed_through():
    from contracts import (
        CampaignPhase,
        CampaignRecord,
        CampaignRequest,
        CampaignResult,
        CampaignStatus,
        ControlInput,
        Notification,
        NotificationResult,
        Plan,
        TrialResult,
        relative_gain,
    )
    from workflows import arms, options, policy, recovery


class CampaignContext:
    """The campaign's request, its state and the flags of this run, with the state's writers.

    ``state`` is the one model that continue-as-new carries; the rest lives for one run.

    Args:
        request: The validated request.
        state: The state carried over by continue-as-new, or None in a campaign's first run.
    """

    def __init__(self, request: CampaignRequest, state: CampaignStatus | None) -> None:
        self.request = request
        self.state = (
            CampaignStatus.model_validate(state).model_copy(update={"runs": state.runs + 1})
            if state
            else CampaignStatus(
                campaign_id=workflow.info().workflow_id, goal=request.goal, metric=request.metric
            )
        )
        self.stopping = bool(self.state.stop_reason)
        # In-worker trials' activity handles by trial id (None while a job is launched).
        self.running: dict[str, workflow.ActivityHandle[TrialResult] | None] = {}
        # What jobs reported by signal, by trial: a result, or None from a job its scheduler
        # stopped.
        self.job_results: dict[str, TrialResult | None] = {}
        # Reports that came before their launch was seen, by job id (see job_finished).
        self.early_job_reports: dict[str, TrialResult | None] = {}
        self.launched_this_run = 0
        self.draining = False
        self.budget_closed = False
        # Spending reached the budget under on_exhausted="stop-running": running trials stop.
        self.halting = False
        # recheck_preflight is running: approval waits for its report.
        self.rechecking = False
        # The approved budget at which "budget exhausted" was last posted: trials waiting
        # together for an extension post it once, and again only after an extension.
        self.exhaustion_posted_at: float | None = None

    @property
    def id(self) -> str:
        return self.state.campaign_id

    def set(self, **changes: object) -> None:
        self.state = self.state.model_copy(update=changes)

    def halted(self) -> bool:
        return self.stopping or self.budget_closed

    def note(self, phase: str, note: str) -> None:
        """Say why a phase ran fewer trials than planned (or none)."""
        if note:
            self.set(phase_notes={**self.state.phase_notes, phase: note})

    def update_trial(self, trial_id: str, **changes: Any) -> None:
        self.set(
            trials=[
                t.model_copy(update=changes) if t.trial_id == trial_id else t
                for t in self.state.trials
            ]
        )

    # ---- stopping ---------------------------------------------------------------------------

    def request_stop(self, reason: str) -> None:
        if self.stopping:
            return
        self.stopping = True
        self.set(stop_reason=reason, message=reason)
        self.cancel_running()
        self.show_details()

    def cancel_running(self) -> None:
        """Cancel in-worker trials (they checkpoint); external jobs are stopped by their waiters
        (``TrialRunner.wait_for_job`` watches ``stopping`` and ``halting``)."""
        for handle in self.running.values():
            if handle is not None and not handle.done():
                handle.cancel()

    async def hand_over(self) -> None:
        """Continue as new: every trial of this run has finished and is recorded, so the
        whole state goes to a fresh run, which resumes at the same phase."""
        await workflow.wait_condition(workflow.all_handlers_finished)
        workflow.continue_as_new(args=[self.request, self.state])

    # ---- visibility -------------------------------------------------------------------------

    def fail(self, failure: ApplicationError) -> ApplicationError:
        """Record why the campaign fails (status, search attributes), then return the error
        that fails the workflow."""
        self.set(error=failure.message, needs_attention=failure.message)
        self.enter("failed", failure.message)
        return failure

    def enter(self, phase: CampaignPhase, message: str) -> None:
        self.set(phase=phase, message=message)
        self.publish()

    def publish(self) -> None:
        """Mirror the state into search attributes and current details for the Web UI."""
        s = self.state
        updates: list[SearchAttributeUpdate[Any]] = [
            options.PHASE.value_set(s.phase),
            options.DEVICE_HOURS_SPENT.value_set(s.ledger.spent),
            options.DEVICE_HOURS_APPROVED.value_set(s.ledger.approved),
            options.NEEDS_ATTENTION.value_set(bool(s.needs_attention or s.open_escalations)),
        ]
        if s.recovery == "runbook":
            updates.append(
                options.TRIALS_NEEDING_ATTENTION.value_set([e.trial_id for e in s.open_escalations])
            )
        if s.best_metric is not None:
            updates.append(options.BEST_METRIC.value_set(s.best_metric))
        workflow.upsert_search_attributes(updates)
        self.show_details()

    def show_details(self) -> None:
        s = self.state
        lines = [
            policy.one_line_summary(s, running=len(self.running)),
            f"**needs attention** {s.needs_attention}" if s.needs_attention else "",
            *(
                f"**trial needs attention** {recovery.escalation_line(e)}"
                for e in s.open_escalations
            ),
            f"**budget** {s.ledger.spent:.4g} spent + {s.ledger.reserved:.4g} reserved of "
            f"{s.ledger.approved or '?'} device-hours",
            f"**verdict** {s.proposal.headline}" if s.proposal else "",
            policy.plan_line(s.plan) if s.plan and s.phase == "awaiting_approval" else "",
            f"**{'best' if s.protocol == 'single-seed' else 'leading (passed a gate)'} "
            f"{s.metric}** {s.best_metric if s.best_metric is not None else '-'} "
            f"({s.best_trial_id or 'none yet'})",
            f"**running** {', '.join(self.running) or 'nothing'}",
            f"**last** {s.message}",
        ]
        workflow.set_current_details("\n\n".join(line for line in lines if line))

    # ---- the outside world ----------------------------------------------------------------

    async def notify(self, notification: Notification) -> None:
        """Tell the engineers in Slack; a notification that fails is logged and forgotten,
        never a reason for the campaign to fail or wait long (see ``options.NOTIFY_RETRY``)."""
        if not workflow.patched("notifications"):
            return
        try:
            await workflow.execute_activity(
                "notify_slack",
                notification,
                result_type=NotificationResult,
                start_to_close_timeout=options.NOTIFY_TIMEOUT,
                retry_policy=options.NOTIFY_RETRY,
                summary=f"notify: {notification.kind}",
            )
        except ActivityError as err:
            workflow.logger.warning(
                "%s: the %s notification failed: %s",
                self.id,
                notification.kind,
                error_message(err),
            )

    async def record(self) -> None:
        """Keep the campaign (plan, provenance, decisions) in the insights database."""
        if self.state.planner != "dual-source" or self.state.plan is None:
            return
        plan, changes = self.state.plan, {}
        for decision in self.state.decisions.values():
            for c in decision.comparisons:
                try:
                    changes[c.hypothesis_id] = arms.arm_changes(
                        self.request, plan, c.hypothesis_id, self.state.tuned
                    )
                except KeyError:  # an arm of a hypothesis no longer planned
                    continue
        await workflow.execute_activity(
            "record_campaign",
            CampaignRecord(
                campaign_id=self.id,
                request=self.request,
                status=self.state.model_copy(update={"trials": []}),
                arm_changes=changes,
            ),
            start_to_close_timeout=options.RECORD_TIMEOUT,
            retry_policy=options.BOOKKEEPING_RETRY,
            summary="record the campaign in the insights database",
        )

    # ---- the end ------------------------------------------------------------------------------

    def result(self, plan: Plan | None) -> CampaignResult:
        """Enter the final phase and say what the campaign found."""
        if self.stopping:
            self.enter("stopped", self.state.stop_reason)
        else:
            why = " (budget exhausted and not extended)" if self.budget_closed else ""
            self.enter("done", f"Done{why}: {len(self.state.trials)} trials.")
        proposal = self.state.proposal
        if self.state.protocol != "single-seed":
            # Only what the verdict supports: a model and a gain only when it says launch.
            launch = proposal is not None and proposal.verdict == "launch"
            return CampaignResult(
                status=self.state,
                best_model=(
                    self.request.baseline.with_changes(proposal.changes)
                    if launch and proposal
                    else None
                ),
                improvement=(
                    proposal.confirmation.gain
                    if launch and proposal and proposal.confirmation
                    else None
                ),
            )
        best = policy.best_trial(self.state.trials, self.request.metric)
        improvement = None
        if self.state.best_metric is not None and self.state.baseline_metric is not None:
            improvement = relative_gain(
                self.state.best_metric, self.state.baseline_metric, self.request.metric
            )
        return CampaignResult(
            status=self.state,
            best_model=(
                policy.model_for(self.request, plan, best.hypothesis_ids) if best and plan else None
            ),
            improvement=improvement,
        )


def control_message(verb: str, control: ControlInput) -> str:
    """E.g. "Paused by alice@example.com: GPU maintenance."."""
    who = f" by {control.by}" if control.by else ""
    why = f": {control.reason}" if control.reason else ""
    return f"{verb}{who}{why}."


def validated_request(request: object) -> CampaignRequest:
    """The request as a model; a malformed one fails the workflow with one line per field."""
    try:
        return CampaignRequest.model_validate(request)
    except ValidationError as err:
        raise ApplicationError(
            f"invalid CampaignRequest: {validation_problems(err)}",
            type="InvalidRequest",
            non_retryable=True,
        ) from None


def validation_problems(err: ValidationError) -> str:
    """One ``field: problem`` per error, joined."""
    return "; ".join(
        f"{'.'.join(str(p) for p in e['loc']) or '(root)'}: {e['msg']}" for e in err.errors()
    )


def error_message(err: ActivityError) -> str:
    """The innermost message of an activity's failure: what the activity itself said."""
    cause: BaseException = err
    while cause.__cause__ is not None:
        cause = cause.__cause__
    return str(cause)
