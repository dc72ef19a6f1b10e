"""Recovery of a failed trial: diagnose, remedy, and escalate what the runbooks cannot fix.

The decisions are pure (``workflows.recovery``); this room sequences them: the diagnosis
activity, the remedy's run (through the trial runner), its record, and, for a failure no
runbook entry matches, an engineer's answer awaited durably while the rest of the batch goes on.
"""

from datetime import timedelta
from typing import Protocol

from temporalio import workflow
from temporalio.exceptions import ActivityError

with workflow.unsafe.imports_passed_through():
    from contracts import (
        ControlInput,
        Diagnosis,
        Escalation,
        FailureReport,
        Notification,
        RemedyAttempt,
        RemedyRecord,
        ResolveTrialInput,
        ResumeFromCheckpoint,
        SetFields,
        TrialResult,
        TrialSpec,
    )
    from workflows import options, recovery
    from workflows.context import CampaignContext, control_message, error_message


class Relauncher(Protocol):
    """What recovery needs of the trial runner: run a remedy's spec."""

    async def rerun(self, run: TrialSpec, attempt: RemedyAttempt) -> TrialResult | None: ...


class TrialRecovery:
    """Remedies failed trials by the runbooks, or asks an engineer.

    Args:
        ctx: The campaign's context.
        runner: Runs each remedy (the trial again, or a linked trial).
    """

    def __init__(self, ctx: CampaignContext, runner: Relauncher) -> None:
        self.ctx = ctx
        self.runner = runner

    async def recover(self, spec: TrialSpec, result: TrialResult) -> TrialResult:
        """Diagnose a failed trial and apply remedies until one works; escalate what the
        runbooks (and the research agent) cannot fix, and act on the engineer's answer.

        Returns the trial's own result: a placement remedy that worked replaces it; a remedy
        run as a linked trial leaves it as it failed.
        """
        ctx = self.ctx
        failed_spec, failed = spec, result
        while not ctx.halted():
            tried = [a for a in ctx.state.remedies if a.trial_id == spec.trial_id]
            diagnosis = await self._diagnose(failed_spec, failed, tried)
            remedy, model, dataset = diagnosis.remedy, diagnosis.model, diagnosis.dataset
            pattern = (diagnosis.pattern_id, diagnosis.pattern_version)
            if remedy is None:
                answer = await self._escalate(spec, failed_spec, failed, diagnosis, tried)
                if answer is None or answer.action != "retry":
                    return result
                pattern = (recovery.ENGINEER, 1)
                if answer.changes:
                    remedy = SetFields(changes=answer.changes)
                    model = failed_spec.model.with_changes(answer.changes)
                else:
                    remedy = ResumeFromCheckpoint()
            attempt = RemedyAttempt(
                trial_id=spec.trial_id,
                attempt=len(tried) + 1,
                pattern_id=pattern[0],
                pattern_version=pattern[1],
                remedy=remedy,
                run_trial_id="",
            )
            run = recovery.remedy_spec(spec, failed_spec, remedy, attempt.attempt, model, dataset)
            attempt = attempt.model_copy(update={"run_trial_id": run.trial_id})
            ctx.set(
                remedies=[*ctx.state.remedies, attempt],
                message=f"{spec.trial_id} {failed.state} ({failed.error_type or failed.state}): "
                f"{recovery.describe(attempt)} as {run.trial_id}.",
            )
            outcome = await self.runner.rerun(run, attempt)
            await self._record(attempt, outcome)
            if outcome is None or not recovery.needs_recovery(run, outcome):
                # A relaunch of the trial itself stands for it; a linked trial never does.
                return outcome if outcome is not None and run.trial_id == spec.trial_id else result
            failed_spec, failed = run, outcome
        return result

    async def _record(self, attempt: RemedyAttempt, outcome: TrialResult | None) -> None:
        """Keep how a remedy ended, in the state and in the insights database."""
        ctx = self.ctx
        attempt = attempt.model_copy(
            update={
                "state": outcome.state if outcome else "cancelled",
                "error_type": outcome.error_type if outcome else "",
            }
        )
        ctx.set(
            remedies=[
                attempt if (a.trial_id, a.attempt) == (attempt.trial_id, attempt.attempt) else a
                for a in ctx.state.remedies
            ]
        )
        await workflow.execute_activity(
            "record_remedy",
            RemedyRecord(campaign_id=ctx.id, attempt=attempt),
            start_to_close_timeout=options.RECORD_TIMEOUT,
            retry_policy=options.BOOKKEEPING_RETRY,
            summary=f"store remedy {attempt.attempt} of {attempt.trial_id}",
        )

    async def _diagnose(
        self, spec: TrialSpec, result: TrialResult, tried: list[RemedyAttempt]
    ) -> Diagnosis:
        """The runbooks' diagnosis (an activity: the runbooks and the remedies' record are
        data); a diagnosis that cannot be made escalates with the error."""
        try:
            diagnosis: Diagnosis = await workflow.execute_activity(
                "diagnose_failure",
                FailureReport(spec=spec, result=result, tried=tried, log_tail=result.log_tail),
                result_type=Diagnosis,
                start_to_close_timeout=options.DIAGNOSE_TIMEOUT,
                retry_policy=options.DIAGNOSE_RETRY,
                summary=f"diagnose {spec.trial_id} ({result.error_type or result.state})",
            )
        except ActivityError as err:
            return Diagnosis(why_escalate=f"the diagnosis failed: {error_message(err)}")
        return diagnosis

    async def _escalate(
        self,
        spec: TrialSpec,
        failed_spec: TrialSpec,
        failed: TrialResult,
        diagnosis: Diagnosis,
        tried: list[RemedyAttempt],
    ) -> ResolveTrialInput | None:
        """Hand the trial to an engineer and wait for the answer (``resolve_trial``) while
        the other trials go on; past ``escalation_wait_hours`` the trial is skipped."""
        ctx = self.ctx
        escalation = Escalation(
            trial_id=spec.trial_id,
            error_type=failed.error_type,
            error=failed.error,
            diagnosis=diagnosis,
            tried=tried,
            model=failed_spec.model,
        )
        ctx.set(
            escalations=[*ctx.state.escalations, escalation],
            message=f"{recovery.escalation_line(escalation)}; answer with "
            f"`rea campaign resolve {ctx.id} {spec.trial_id} --retry|--skip|--stop`.",
        )
        ctx.publish()
        await ctx.notify(
            Notification(
                campaign_id=ctx.id,
                kind="trial_escalated",
                goal=ctx.request.goal,
                approvers=ctx.request.approvers,
                escalation=escalation,
            )
        )

        def answered() -> bool:
            return all(
                e.resolution is not None
                for e in ctx.state.escalations
                if e.trial_id == spec.trial_id
            )

        try:
            await workflow.wait_condition(
                lambda: answered() or ctx.stopping,
                timeout=timedelta(hours=ctx.request.escalation_wait_hours),
                timeout_summary=f"{spec.trial_id}: waiting for an engineer (resolve_trial)",
            )
        except TimeoutError:
            self._skip_unanswered(spec.trial_id)
        answer = next(
            (e.resolution for e in reversed(ctx.state.escalations) if e.trial_id == spec.trial_id),
            None,
        )
        ctx.publish()
        if answer is not None and answer.action == "stop":
            who = ControlInput(by=answer.approver, reason=answer.comment or f"{spec.trial_id}")
            ctx.request_stop(control_message("Stopped", who))
        return None if ctx.stopping else answer

    def _skip_unanswered(self, trial_id: str) -> None:
        """No engineer answered in time: the trial is skipped, and the record says why."""
        ctx = self.ctx
        skip = ResolveTrialInput(
            approver="(no answer)",
            trial_id=trial_id,
            action="skip",
            comment=f"no answer in {ctx.request.escalation_wait_hours:g} h",
        )
        ctx.set(
            escalations=[
                e.model_copy(update={"resolution": skip})
                if e.trial_id == trial_id and e.resolution is None
                else e
                for e in ctx.state.escalations
            ]
        )
