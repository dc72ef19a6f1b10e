"""The trial runner: wait for a slot and the budget, train in the worker or as a job, record.

A trial launches when a slot is free and the ledger affords it, both at once; it trains as an
in-worker activity or as an external job (``workflows.jobs``); its result is charged, kept in
the state and recorded. A failed trial goes to its recovery (``workflows.trial_recovery``)
before the caller sees the result.
"""

import asyncio
from collections.abc import Awaitable, Callable
from datetime import timedelta

from temporalio import workflow
from temporalio.exceptions import ActivityError, ApplicationError, CancelledError

with workflow.unsafe.imports_passed_through():
    from contracts import (
        Notification,
        RemedyAttempt,
        TrialRecord,
        TrialResult,
        TrialSpec,
        TrialSummary,
    )
    from workflows import options, policy, recovery
    from workflows.context import CampaignContext
    from workflows.jobs import JobRuns
    from workflows.trial_recovery import TrialRecovery


class TrialRunner:
    """Runs trials for the campaign's phases, within slots and budget, with recovery.

    Args:
        ctx: The campaign's context.
    """

    def __init__(self, ctx: CampaignContext) -> None:
        self.ctx = ctx
        self.jobs = JobRuns(ctx)
        self.recovery = TrialRecovery(ctx, self)
        # Set while a batch the workflow sized to the budget runs (a gate's look): a trial
        # the budget cannot afford is skipped, not a reason to ask an engineer for more.
        self.sized_to_budget = False

    async def run(self, spec: TrialSpec) -> TrialResult | None:
        """Launch ``spec`` when it fits, wait for it and record it; None when it did not run.

        Under runbooks a failure is diagnosed and remedied (or escalated) before this
        returns: the result is the trial's own last run (a remedy in a linked trial leaves
        it failed)."""
        ctx = self.ctx
        if not await self.wait_to_launch(spec):
            return None
        if ctx.state.recovery == "runbook":
            # What the trial may read and write goes with it: its activities enforce it.
            spec = spec.model_copy(update={"access": ctx.request.access})
        self.add_trial(spec)
        result = await self.train_and_record(spec)
        if (
            ctx.state.recovery == "runbook"
            and not spec.exploratory
            and recovery.needs_recovery(spec, result)
            and not ctx.halted()
        ):
            result = await self.recovery.recover(spec, result)
        return result

    async def run_batch(
        self,
        specs: list[TrialSpec],
        after: Callable[[TrialSpec, TrialResult], Awaitable[None]] | None = None,
    ) -> None:
        """Run the trials of ``specs`` not yet run (in parallel, within slots and budget);
        ``after`` runs on each result. Hands over to a fresh run when draining."""

        async def one(spec: TrialSpec) -> None:
            result = await self.run(spec)
            if result is not None and after is not None:
                await after(spec, result)

        await asyncio.gather(*(one(s) for s in specs if self.ctx.state.trial(s.trial_id) is None))
        if self.ctx.draining:
            await self.ctx.hand_over()

    # ---- launching ----------------------------------------------------------------------------

    async def wait_to_launch(self, spec: TrialSpec, new_trial: bool = True) -> bool:
        """Wait until ``spec`` has a free slot and the ledger affords it, both at once.

        Returns False when it must not launch in this run (stopped, budget closed, or
        draining for continue-as-new). Every wait ends in a fresh check of both conditions:
        trials that woke for an extension or a resume must not all launch past
        ``max_parallel_trials``. Nothing awaits between the last check and the caller's
        claim of the slot, so only one waiter takes a freed slot.
        """
        ctx = self.ctx
        estimate = spec.estimated_device_hours
        while not (ctx.stopping or ctx.budget_closed or ctx.draining):
            if new_trial and len(ctx.state.trials) >= ctx.request.budget.max_trials:
                ctx.note(policy.ledger_phase(spec.phase), "max_trials reached")
                break
            if policy.should_continue_as_new(
                workflow.info().is_continue_as_new_suggested(), ctx.launched_this_run
            ):
                ctx.draining = True
                break
            if not self._slot_free():
                await workflow.wait_condition(
                    lambda: ctx.stopping or self._slot_free(),
                    timeout_summary=f"{spec.trial_id}: waiting for a free trial slot",
                )
            elif policy.can_afford(estimate, ctx.state.ledger):
                return True
            elif ctx.running:
                # Running trials' reservations free up as they finish.
                running = len(ctx.running)
                await workflow.wait_condition(
                    lambda n=running: ctx.stopping or len(ctx.running) < n,  # type: ignore[misc]
                    timeout_summary=f"{spec.trial_id}: waiting for reserved budget to free up",
                )
            elif self.sized_to_budget:
                break
            else:
                await self._wait_for_extension(spec)
        return False

    def _slot_free(self) -> bool:
        ctx = self.ctx
        return not ctx.state.paused and len(ctx.running) < ctx.request.budget.max_parallel_trials

    async def _wait_for_extension(self, spec: TrialSpec) -> None:
        """Nothing runs and ``spec`` does not fit: the budget is spent. Ask for more, durably;
        close the budget when no extension comes in time."""
        ctx = self.ctx
        estimate = spec.estimated_device_hours
        ledger = ctx.state.ledger
        ctx.set(
            needs_attention=f"budget exhausted: {ledger.spent:.4f} of {ledger.approved} "
            f"device-hours spent; extend_budget to run {spec.trial_id} and the rest",
        )
        ctx.publish()
        if ctx.exhaustion_posted_at != ledger.approved:
            ctx.exhaustion_posted_at = ledger.approved
            approval = ctx.state.approval
            await ctx.notify(
                Notification(
                    campaign_id=ctx.id,
                    kind="budget_exhausted",
                    goal=ctx.request.goal,
                    approvers=ctx.request.approvers,
                    budget_device_hours=ledger.approved,
                    ledger=ledger,
                    # The button adds the originally approved amount again.
                    extend_by_device_hours=approval.device_hours
                    if approval
                    else ctx.request.budget.device_hours,
                )
            )
        try:
            await workflow.wait_condition(
                lambda: ctx.stopping or policy.can_afford(estimate, ctx.state.ledger),
                timeout=timedelta(hours=ctx.request.budget.extension_wait_hours),
                timeout_summary="waiting for an engineer to extend the budget",
            )
        except TimeoutError:
            ctx.budget_closed = True
            ctx.set(message="Budget exhausted and not extended: reporting what we have.")
        ctx.set(needs_attention="")
        ctx.publish()

    def add_trial(self, spec: TrialSpec) -> None:
        self.ctx.set(
            trials=[
                *self.ctx.state.trials,
                TrialSummary(
                    trial_id=spec.trial_id,
                    phase=spec.phase,
                    hypothesis_ids=spec.hypothesis_ids,
                    arm=spec.arm,
                    seed=spec.model.seed,
                    estimated_device_hours=spec.estimated_device_hours,
                    remedy_of=spec.remedy_of,
                    launched_at=workflow.now(),
                ),
            ],
        )
        self._reserve(spec)

    def _reserve(self, spec: TrialSpec) -> None:
        self.ctx.launched_this_run += 1
        self.ctx.set(
            ledger=self.ctx.state.ledger.change(
                policy.ledger_phase(spec.phase), reserved=spec.estimated_device_hours
            ),
        )

    async def rerun(self, run: TrialSpec, attempt: RemedyAttempt) -> TrialResult | None:
        """Run a remedy: the same trial again (placement) or a new linked trial; None when it
        could not launch (stopped, budget closed)."""
        rerun = self.ctx.state.trial(run.trial_id) is not None
        if not await self.wait_to_launch(run, new_trial=not rerun):
            return None
        if rerun:
            self.ctx.update_trial(run.trial_id, state="running", error="", error_type="")
            self._reserve(run)
        else:
            self.add_trial(run)
        return await self.train_and_record(
            run,
            attempt=recovery.job_attempt(self.ctx.state.remedies, run.trial_id),
            remedy=recovery.describe(attempt),
        )

    # ---- training -----------------------------------------------------------------------------

    async def train_and_record(
        self, spec: TrialSpec, attempt: int = 1, remedy: str = ""
    ) -> TrialResult:
        """Train a launched trial (slot claimed, budget reserved), charge and record it."""
        ctx = self.ctx
        ctx.running[spec.trial_id] = None
        try:
            if ctx.request.execution == "in-worker":
                result = await self._train_in_worker(spec)
            else:
                result = await self.jobs.train(spec, attempt)
        finally:
            del ctx.running[spec.trial_id]
        result = self._finish(spec, result)
        await workflow.execute_activity(
            "record_trial",
            TrialRecord(spec=spec, result=result, remedy=remedy),
            start_to_close_timeout=options.RECORD_TIMEOUT,
            retry_policy=options.BOOKKEEPING_RETRY,
            summary=f"store {spec.trial_id}",
        )
        if policy.exhausted(ctx.state.ledger) and ctx.request.budget.on_exhausted == "stop-running":
            ctx.halting = True
            ctx.cancel_running()
        return result

    async def _train_in_worker(self, spec: TrialSpec) -> TrialResult:
        handle = workflow.start_activity(
            "train_trial",
            spec,
            task_queue=options.TRAINING_QUEUE,
            result_type=TrialResult,
            start_to_close_timeout=options.TRIAL_TIMEOUT,
            heartbeat_timeout=timedelta(seconds=self.ctx.request.heartbeat_timeout_s),
            retry_policy=options.TRIAL_RETRY,
            # Stop waits until the trainer has acknowledged cancellation: nothing orphaned.
            cancellation_type=workflow.ActivityCancellationType.WAIT_CANCELLATION_COMPLETED,
            summary=f"train {spec.trial_id}",
        )
        self.ctx.running[spec.trial_id] = handle
        self.ctx.show_details()
        try:
            return await handle
        except ActivityError as err:
            return _failed_result(spec, err)

    def _finish(self, spec: TrialSpec, result: TrialResult) -> TrialResult:
        """Charge and keep a trial's result; returns it as recorded. A trial run again (a
        placement remedy) carries the device-hours of all its runs, so the recorded spends
        add up to the ledger."""
        ctx = self.ctx
        trial = ctx.state.trial(spec.trial_id)
        assert trial is not None
        charged = result.device_hours
        if ctx.state.recovery == "runbook":
            result = result.model_copy(update={"device_hours": trial.device_hours + charged})
        ended = trial.finished(result, ended_at=workflow.now())
        trials = [ended if t is trial else t for t in ctx.state.trials]
        ctx.set(
            trials=trials,
            spent_estimated=ctx.state.spent_estimated + spec.estimated_device_hours,
            ledger=ctx.state.ledger.change(
                policy.ledger_phase(spec.phase),
                reserved=-spec.estimated_device_hours,
                spent=charged,
            ),
            message=f"{spec.trial_id} {result.state}.",
        )
        if ctx.state.protocol == "single-seed":
            metric = ctx.request.metric
            best = policy.best_trial(trials, metric)
            ctx.set(
                best_trial_id=best.trial_id if best else "",
                best_metric=best.metric(metric) if best else None,
                baseline_metric=policy.metric_of(trials, policy.BASELINE_TRIAL_ID, metric),
            )
        ctx.publish()
        return result


def _failed_result(spec: TrialSpec, err: ActivityError) -> TrialResult:
    cause = err.cause
    if isinstance(cause, CancelledError):
        return TrialResult(campaign_id=spec.campaign_id, trial_id=spec.trial_id, state="cancelled")
    error_type = cause.type if isinstance(cause, ApplicationError) and cause.type else ""
    error_type = error_type or type(cause or err).__name__
    return TrialResult(
        campaign_id=spec.campaign_id,
        trial_id=spec.trial_id,
        # Trainers report divergence as a result; an older one raised it as an error.
        state="diverged" if error_type == "DivergenceError" else "failed",
        error=str(cause or err),
        error_type=error_type,
    )
