"""CampaignWorkflow: plan, wait for approval, run trials phase by phase, report the best model.

The workflow only decides and sequences; planning, training and bookkeeping are activities,
called by name so that this module never imports their (torch-heavy) code.
"""

import asyncio
from collections.abc import Callable
from typing import Any

from pydantic import ValidationError
from temporalio import workflow
from temporalio.common import SearchAttributeUpdate
from temporalio.exceptions import ActivityError, ApplicationError, CancelledError

with workflow.unsafe.imports_passed_through():
    from contracts import (
        Approval,
        ApproveInput,
        CampaignPhase,
        CampaignRequest,
        CampaignResult,
        CampaignStatus,
        ControlInput,
        Plan,
        PlanningInput,
        TrialRecord,
        TrialResult,
        TrialSpec,
    )
    from workflows import options, policy


# A request that does not validate fails the workflow at once (it names the field) instead of
# failing workflow tasks that Temporal would retry forever.
@workflow.defn(name="CampaignWorkflow", failure_exception_types=[ValidationError])
class CampaignWorkflow:
    """One campaign: improve a metric of a baseline model within an approved budget."""

    @workflow.init
    def __init__(self, request: CampaignRequest) -> None:
        self._request = request
        self._state = CampaignStatus(
            campaign_id=workflow.info().workflow_id, goal=request.goal, metric=request.metric
        )
        self._stopping = False
        self._stop_message = ""
        self._reserved_device_hours = 0.0
        self._running: dict[str, workflow.ActivityHandle[TrialResult]] = {}

    @workflow.run
    async def run(self, request: CampaignRequest) -> CampaignResult:
        self._enter("planning", "Proposing hypotheses and estimating their cost.")
        plan = await workflow.execute_activity(
            "plan_campaign",
            PlanningInput(campaign_id=self._state.campaign_id, request=request),
            result_type=Plan,
            start_to_close_timeout=options.PLANNING_TIMEOUT,
            retry_policy=options.BOOKKEEPING_RETRY,
            summary="propose hypotheses and estimate cost",
        )
        self._set(plan=plan)
        self._enter(
            "awaiting_approval",
            f"Waiting for approval by one of {', '.join(request.approvers)}: "
            f"{len(plan.hypotheses)} hypotheses, estimated "
            f"{plan.estimated_device_hours:.4f} of {request.budget.device_hours} device-hours.",
        )
        await workflow.wait_condition(
            lambda: self._state.approval is not None or self._stopping,
            timeout_summary="waiting for an engineer to approve the plan",
        )
        phases: list[tuple[CampaignPhase, Callable[[], list[TrialSpec]]]] = [
            ("validation", lambda: policy.validation_trials(self._id, request, plan)),
            (
                "combination",
                lambda: policy.combination_trials(self._id, request, plan, self._state.trials),
            ),
        ]
        for phase, make_trials in phases:
            if self._stopping:
                break
            trials = make_trials()
            self._enter(phase, f"Running {len(trials)} {phase} trial(s).")
            await asyncio.gather(*(self._run_trial(spec) for spec in trials))
        # Let an in-flight approve/ stop handler finish before the workflow completes.
        await workflow.wait_condition(workflow.all_handlers_finished)
        return self._result()

    # ---- handlers -------------------------------------------------------------------------

    @workflow.query
    def status(self) -> CampaignStatus:
        """Where the campaign is: phase, plan, approval, trials, best metric, spend."""
        return self._state

    @workflow.update
    def approve(self, approval: ApproveInput) -> Approval:
        """Approve the pending plan. Approving again returns the first approval unchanged."""
        if self._state.approval is None:
            self._set(
                approval=Approval(
                    approver=approval.approver,
                    comment=approval.comment,
                    approved_at=workflow.now(),
                    device_hours=self._request.budget.device_hours,
                ),
                device_hours_approved=self._request.budget.device_hours,
                message=f"Approved by {approval.approver}.",
            )
        assert self._state.approval is not None
        return self._state.approval

    @approve.validator
    def _validate_approve(self, approval: ApproveInput) -> None:
        # Validators run before anything is written to history: a rejected approval leaves
        # no trace, so a stray click from a Slack bot costs nothing.
        if approval.approver not in self._request.approvers:
            raise ApplicationError(
                f"approver: {approval.approver!r} may not approve this campaign; "
                f"ask one of {self._request.approvers}",
                type="NotAnApprover",
                non_retryable=True,
            )
        if self._state.approval is not None:
            return
        if self._state.phase != "awaiting_approval":
            raise ApplicationError(
                f"no plan is pending approval (phase is {self._state.phase!r}); "
                "approve once `rea campaign status` shows phase awaiting_approval",
                type="NothingToApprove",
                non_retryable=True,
            )

    @workflow.signal
    def pause(self, control: ControlInput) -> None:
        """Launch no new trials until resumed; running trials finish."""
        self._set(paused=True, message=self._control_message("Paused", control))
        self._show_details()

    @workflow.signal
    def resume(self, control: ControlInput) -> None:
        """Launch trials again after a pause."""
        self._set(paused=False, message=self._control_message("Resumed", control))
        self._show_details()

    @workflow.signal
    def stop(self, control: ControlInput) -> None:
        """Stop: cancel running trials and finish with what has been learned so far."""
        self._stopping = True
        self._stop_message = self._control_message("Stopped", control)
        self._set(message=self._stop_message)
        for handle in self._running.values():
            handle.cancel()

    # ---- trials ---------------------------------------------------------------------------

    async def _run_trial(self, spec: TrialSpec) -> None:
        if not await self._free_slot(spec):
            return
        if not policy.can_afford(
            spec.estimated_device_hours,
            self._state.device_hours_spent,
            self._reserved_device_hours,
            self._state.device_hours_approved,
        ):
            self._set(message=f"Skipped {spec.trial_id}: it would exceed the approved budget.")
            return
        self._reserved_device_hours += spec.estimated_device_hours
        self._set(trials=[*self._state.trials, TrialRecord(spec=spec)])
        handle = workflow.start_activity(
            "train_trial",
            spec,
            task_queue=options.TRAINING_QUEUE,
            result_type=TrialResult,
            start_to_close_timeout=options.TRIAL_TIMEOUT,
            heartbeat_timeout=options.TRIAL_HEARTBEAT_TIMEOUT,
            retry_policy=options.TRIAL_RETRY,
            # Stop waits until the trainer has acknowledged cancellation: nothing orphaned.
            cancellation_type=workflow.ActivityCancellationType.WAIT_CANCELLATION_COMPLETED,
            summary=f"train {spec.trial_id}",
        )
        self._running[spec.trial_id] = handle
        self._show_details()
        try:
            result = await handle
        except ActivityError as err:
            result = _failed_result(spec, err)
        finally:
            del self._running[spec.trial_id]
            self._reserved_device_hours -= spec.estimated_device_hours
        self._record(TrialRecord(spec=spec, result=result))
        await workflow.execute_activity(
            "record_trial",
            TrialRecord(spec=spec, result=result),
            start_to_close_timeout=options.RECORD_TIMEOUT,
            retry_policy=options.BOOKKEEPING_RETRY,
            summary=f"store {spec.trial_id}",
        )

    async def _free_slot(self, spec: TrialSpec) -> bool:
        """Wait until a trial may launch; False when the campaign stops first.

        Every waiting trial's condition is checked in the same pass, so several can wake for
        one free slot: each re-checks after waking, and only the first claims it.
        """
        while not self._stopping:
            if self._slot_free():
                return True
            await workflow.wait_condition(
                lambda: self._stopping or self._slot_free(),
                timeout_summary=f"{spec.trial_id}: waiting for a free trial slot",
            )
        return False

    def _slot_free(self) -> bool:
        return (
            not self._state.paused and len(self._running) < self._request.budget.max_parallel_trials
        )

    def _record(self, record: TrialRecord) -> None:
        trials = [
            record if r.spec.trial_id == record.spec.trial_id else r for r in self._state.trials
        ]
        metric = self._request.metric
        best = policy.best_record(trials, metric)
        assert record.result is not None
        self._set(
            trials=trials,
            device_hours_spent=self._state.device_hours_spent + record.result.device_hours,
            best_trial_id=best.spec.trial_id if best else "",
            best_metric=best.result.metric(metric) if best and best.result else None,
            baseline_metric=policy.metric_of(trials, policy.BASELINE_TRIAL_ID, metric),
            message=f"{record.spec.trial_id} {record.result.state}.",
        )
        self._publish()

    # ---- state and visibility -------------------------------------------------------------

    @property
    def _id(self) -> str:
        return self._state.campaign_id

    def _set(self, **changes: object) -> None:
        self._state = self._state.model_copy(update=changes)

    def _enter(self, phase: CampaignPhase, message: str) -> None:
        self._set(phase=phase, message=message)
        self._publish()

    def _publish(self) -> None:
        """Mirror the state into search attributes and current details for the Web UI."""
        updates: list[SearchAttributeUpdate[Any]] = [
            options.PHASE.value_set(self._state.phase),
            options.DEVICE_HOURS_SPENT.value_set(self._state.device_hours_spent),
        ]
        if self._state.best_metric is not None:
            updates.append(options.BEST_METRIC.value_set(self._state.best_metric))
        workflow.upsert_search_attributes(updates)
        self._show_details()

    def _show_details(self) -> None:
        s = self._state
        lines = [
            f"**phase** {s.phase}{' (paused)' if s.paused else ''}",
            f"**budget** {s.device_hours_spent:.4f} of {s.device_hours_approved or '?'} "
            "device-hours spent",
            f"**best {s.metric}** {s.best_metric if s.best_metric is not None else '-'} "
            f"({s.best_trial_id or 'none yet'})",
            f"**running** {', '.join(self._running) or 'nothing'}",
            f"**last** {s.message}",
        ]
        workflow.set_current_details("\n\n".join(lines))

    @staticmethod
    def _control_message(verb: str, control: ControlInput) -> str:
        who = f" by {control.by}" if control.by else ""
        why = f": {control.reason}" if control.reason else ""
        return f"{verb}{who}{why}."

    def _result(self) -> CampaignResult:
        if self._stopping:
            self._enter("stopped", self._stop_message)
        else:
            self._enter("done", f"Done: {len(self._state.trials)} trials.")
        best = policy.best_record(self._state.trials, self._request.metric)
        improvement = None
        if self._state.best_metric is not None and self._state.baseline_metric is not None:
            improvement = policy.relative_improvement(
                self._state.best_metric, self._state.baseline_metric, self._request.metric
            )
        return CampaignResult(
            status=self._state,
            best_model=best.spec.model if best else None,
            improvement=improvement,
        )


def _failed_result(spec: TrialSpec, err: ActivityError) -> TrialResult:
    cause = err.cause
    if isinstance(cause, CancelledError):
        return TrialResult(campaign_id=spec.campaign_id, trial_id=spec.trial_id, state="cancelled")
    error_type = cause.type if isinstance(cause, ApplicationError) and cause.type else ""
    return TrialResult(
        campaign_id=spec.campaign_id,
        trial_id=spec.trial_id,
        state="failed",
        error=str(cause or err),
        error_type=error_type or type(cause or err).__name__,
    )
