"""CampaignWorkflow: plan, wait for approval, run trials phase by phase, report the best model.

The workflow only decides and sequences; planning, training and bookkeeping are activities,
called by name so that this module never imports their (torch-heavy) code. While trials run
the workflow sleeps on durable conditions and timers: it holds no worker slot, and a worker or
server restart loses nothing.
"""

import asyncio
import math
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

from pydantic import ValidationError
from temporalio import workflow
from temporalio.common import SearchAttributeUpdate
from temporalio.exceptions import ActivityError, ApplicationError, CancelledError

with workflow.unsafe.imports_passed_through():
    from contracts import (
        Approval,
        ApproveInput,
        AskedTrial,
        AskInput,
        CampaignPhase,
        CampaignRecord,
        CampaignRequest,
        CampaignResult,
        CampaignStatus,
        ControlInput,
        Diagnosis,
        Escalation,
        ExtendBudgetInput,
        FailureReport,
        FootprintInput,
        GateDecision,
        GateInput,
        JobFinishedInput,
        JobHandle,
        JobStatus,
        LaunchJobInput,
        Ledger,
        ModelRisks,
        Notification,
        NotificationResult,
        PhaseLedger,
        Plan,
        PlanningInput,
        PreflightInput,
        PreflightItem,
        PreflightReport,
        ProposalInput,
        Proposals,
        RemedyAttempt,
        RemedyRecord,
        ResolveTrialInput,
        ResumeFromCheckpoint,
        RevisePlanInput,
        SetFields,
        TellInput,
        TrialRecord,
        TrialResult,
        TrialSpec,
        TrialSummary,
        direction,
        relative_gain,
    )
    from contracts.job import SCHEDULER_RUNNERS
    from workflows import options, phases, planner, policy, recovery

# The first versions' phases (protocol "single-seed"), kept for the campaigns they started.
EXECUTOR_PHASES: tuple[CampaignPhase, ...] = ("validation", "combination")
EVIDENCE_PHASES: tuple[CampaignPhase, ...] = (
    "validation",
    "combination",
    "exploitation",
    "confirmation",
)


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
            request = _validated_request(request)
        except ApplicationError as err:
            # Raised from run(): raised here it would fail workflow tasks, retried for ever.
            self._invalid = err
            request = CampaignRequest.model_construct(approvers=[])  # type: ignore[call-arg]
        self._request = request
        self._state = (
            CampaignStatus.model_validate(state).model_copy(update={"runs": state.runs + 1})
            if state
            else CampaignStatus(
                campaign_id=workflow.info().workflow_id, goal=request.goal, metric=request.metric
            )
        )
        self._stopping = bool(self._state.stop_reason)
        self._running: dict[str, workflow.ActivityHandle[TrialResult] | None] = {}
        # What jobs reported by signal, by trial: a result, or None from a job its scheduler
        # stopped.
        self._job_results: dict[str, TrialResult | None] = {}
        # Reports that came before their launch was seen, by job id (see job_finished).
        self._early_job_reports: dict[str, TrialResult | None] = {}
        self._launched_this_run = 0
        self._draining = False
        self._budget_closed = False
        # Spending reached the budget under on_exhausted="stop-running": running trials stop.
        self._halting = False
        # recheck_preflight is running: approval waits for its report.
        self._rechecking = False
        # The approved budget at which "budget exhausted" was last posted: trials waiting
        # together for an extension post it once, and again only after an extension.
        self._exhaustion_posted_at: float | None = None

    @workflow.run
    async def run(
        self, request: CampaignRequest, state: CampaignStatus | None = None
    ) -> CampaignResult:
        if self._invalid is not None:
            raise self._fail(self._invalid)
        try:
            return await self._run()
        except asyncio.CancelledError:
            # Cancelled through Temporal rather than stopped: in-worker trials are cancelled
            # with the workflow, but external jobs run on; stop them (they checkpoint) first.
            self._request_stop("Cancelled.")
            await asyncio.gather(
                *(
                    _control_job(
                        "stop_job",
                        t.job,
                        JobStatus,
                        f"stop {t.trial_id} (campaign cancelled)",
                        timeout=options.JOB_STOP_TIMEOUT,
                    )
                    for t in self._state.trials
                    if t.state == "running" and t.job is not None
                )
            )
            raise

    async def _run(self) -> CampaignResult:
        request = self._request  # the validated copy (see __init__)
        # Decided once, before the first command, and carried by continue-as-new: campaigns
        # started by the single-seed versions replay and finish as they began.
        first_run = self._state.runs == 1 and self._state.plan is None
        if first_run and workflow.patched("evidence-gate"):
            self._set(protocol="evidence")
        if first_run and workflow.patched("dual-source-planning"):
            self._set(planner="dual-source")
        if first_run and workflow.patched("runbooks"):
            self._set(recovery="runbook")
        plan = self._state.plan or await self._make_plan()
        if plan is None:  # stopped while planning
            return self._result(None)
        if self._state.approval is None:
            if self._state.recovery == "runbook" and self._state.preflight is None:
                await self._preflight()
            await self._await_approval(plan)
            plan = self._state.plan or plan  # as revised before approval
        if self._state.protocol == "evidence":
            return await self._run_evidence(plan)
        # The guardrail timer is a new command: campaigns started before it replay without it.
        guard = None
        if not self._stopping and workflow.patched("max-wall-time-guardrail"):
            guard = asyncio.create_task(self._guard_wall_clock())
        phases: dict[CampaignPhase, Callable[[], list[TrialSpec]]] = {
            "validation": lambda: policy.validation_trials(self._id, request, plan),
            "combination": lambda: policy.combination_trials(
                self._id, request, plan, self._state.trials
            ),
        }
        first = EXECUTOR_PHASES.index(self._state.phase) if self._state.phase in phases else 0
        for phase in EXECUTOR_PHASES[first:]:
            if self._stopping or self._budget_closed:
                break
            specs = phases[phase]()
            trials = [s for s in specs if self._state.trial(s.trial_id) is None]
            note = policy.fewer_than_planned(request, plan, phase, len(specs), self._state.trials)
            if note:
                self._set(phase_notes={**self._state.phase_notes, phase: note})
            self._enter(
                phase, f"Running {len(trials)} {phase} trial(s){f' ({note})' if note else '.'}"
            )
            await asyncio.gather(*(self._run_trial(spec) for spec in trials))
            if self._draining:
                # Every trial of this run has finished and is recorded: hand the whole state
                # to a fresh run, which resumes at this phase.
                await workflow.wait_condition(workflow.all_handlers_finished)
                workflow.continue_as_new(args=[request, self._state])
        # Let an in-flight approve/ stop handler finish before the workflow completes.
        await workflow.wait_condition(workflow.all_handlers_finished)
        if guard is not None:
            guard.cancel()
        return self._result(plan)

    async def _make_plan(self) -> Plan | None:
        """Plan the campaign; None when it is stopped first.

        Raises:
            ApplicationError: planning failed for good (bad data, a spec that cannot be built
                or cannot fit): the campaign fails, its status naming the error.
        """
        self._enter("planning", "Proposing hypotheses and estimating their cost.")
        if self._state.planner == "dual-source":
            return await self._propose_plan()
        handle = workflow.start_activity(
            "plan_campaign",
            PlanningInput(campaign_id=self._id, request=self._request),
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
        if self._state.protocol == "evidence":
            plan = phases.with_phases(self._request, plan)
        self._set_plan(plan)
        return plan

    async def _unless_stopped(self, handle: workflow.ActivityHandle[Any]) -> bool:
        """Wait for a planning activity; False (and the activity cancelled) when the campaign
        is stopped first. Started rather than executed, so that a stop ends a campaign stuck
        in planning."""
        await workflow.wait_condition(lambda: handle.done() or self._stopping)
        if not handle.done():
            handle.cancel()
            return False
        return True

    def _planning_failed(self, err: ActivityError) -> ApplicationError:
        return self._fail(
            ApplicationError(
                f"planning failed: {_error_message(err)}",
                type="PlanningFailed",
                non_retryable=True,
            )
        )

    def _set_plan(self, plan: Plan, **changes: object) -> None:
        """Adopt ``plan``: the ledger's per-phase estimates follow it."""
        estimates = {p.phase: PhaseLedger(estimated=p.estimated_device_hours) for p in plan.phases}
        ledger = self._state.ledger.model_copy(update={"phases": estimates})
        self._set(plan=plan, ledger=ledger, **changes)

    async def _propose_plan(self) -> Plan | None:
        """Both sources propose (the knowledge agent with what history says, then the LLM agent
        with the same task and insights); the planner merges them. None when stopped first.

        Raises:
            ApplicationError: the knowledge source failed for good (bad data, a baseline that
                cannot be built or fit): the campaign fails. The LLM agent failing is not
                fatal: the plan says so and goes on without it.
        """
        request = self._request
        inp = ProposalInput(
            campaign_id=self._id,
            request=request,
            max_hypotheses=2 * request.max_hypotheses,
            # The preflight checklist reports unreadable data and blocks approval until it
            # is fixed (or overridden); the campaign does not fail on it.
            allow_unreadable_data=self._state.recovery == "runbook",
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
            inp.model_copy(update={"task": knowledge.task, "insights": knowledge.insights}),
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
                note=f"the LLM agent failed ({_error_message(err)}); planned without it",
            )
        plan = planner.build_plan(request, [knowledge, llm])
        self._set_plan(plan, task=knowledge.task)
        await self._record()
        return plan

    async def _record(self) -> None:
        """Keep the campaign (plan, provenance, decisions) in the insights database."""
        if self._state.planner != "dual-source" or self._state.plan is None:
            return
        plan, arms = self._state.plan, {}
        for decision in self._state.decisions.values():
            for c in decision.comparisons:
                try:
                    arms[c.hypothesis_id] = phases.arm_changes(
                        self._request, plan, c.hypothesis_id, self._state.tuned
                    )
                except KeyError:  # an arm of a hypothesis no longer planned
                    continue
        await workflow.execute_activity(
            "record_campaign",
            CampaignRecord(
                campaign_id=self._id,
                request=self._request,
                status=self._state.model_copy(update={"trials": []}),
                arm_changes=arms,
            ),
            start_to_close_timeout=options.RECORD_TIMEOUT,
            retry_policy=options.BOOKKEEPING_RETRY,
            summary="record the campaign in the insights database",
        )

    async def _preflight(self) -> None:
        """Run the preflight checklist on the current plan; its report goes with the approval
        request. A checklist that cannot run at all is reported as a failed item."""
        assert self._state.plan is not None
        self._set(message="Preflight: data, specs, one training step, memory, cost, access.")
        self._publish()
        handle = workflow.start_activity(
            "preflight_campaign",
            PreflightInput(campaign_id=self._id, request=self._request, plan=self._state.plan),
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
                        detail=f"the checklist could not run: {_error_message(err)}",
                        fix="fix the error, then `rea campaign preflight` to check again",
                    )
                ]
            )
        self._set(preflight=report, message=report.summary())

    async def _await_approval(self, plan: Plan) -> None:
        self._ask_for_approval(plan)
        if not self._stopping:
            await self._notify(
                Notification(
                    campaign_id=self._id,
                    kind="plan_awaiting_approval",
                    goal=self._request.goal,
                    approvers=self._request.approvers,
                    hypotheses=[f"{h.id}: {h.title}" for h in plan.hypotheses],
                    estimated_device_hours=plan.estimated_device_hours,
                    budget_device_hours=plan.budget_device_hours
                    or self._request.budget.device_hours,
                    preflight=self._state.preflight,
                )
            )
        await workflow.wait_condition(
            lambda: self._state.approval is not None or self._stopping,
            timeout_summary="waiting for an engineer to approve the plan",
        )
        self._set(needs_attention="")

    def _ask_for_approval(self, plan: Plan) -> None:
        approvers = ", ".join(self._request.approvers)
        preflight = self._state.preflight
        blocked = f"; {preflight.summary()}" if preflight and not preflight.passed else ""
        self._set(needs_attention=f"plan awaits approval by one of {approvers}{blocked}")
        self._enter(
            "awaiting_approval",
            f"Waiting for approval by one of {approvers}: {len(plan.hypotheses)} hypotheses, "
            f"estimated {plan.estimated_device_hours:.4f} of "
            f"{self._request.budget.device_hours} device-hours"
            + (f"; {preflight.summary()}." if preflight else "."),
        )

    async def _guard_wall_clock(self) -> None:
        """Stop the campaign once it has run ``max_wall_hours`` since approval."""
        assert self._state.approval is not None
        limit = timedelta(hours=self._request.budget.max_wall_hours)
        left = self._state.approval.approved_at + limit - workflow.now()
        if left > timedelta(0):
            await workflow.sleep(left, summary="max wall time guardrail")
        self._request_stop(f"Stopped: max wall time of {limit} reached.")

    # ---- the evidence protocol --------------------------------------------------------------

    async def _run_evidence(self, plan: Plan) -> CampaignResult:
        """Validation, combination, exploitation and confirmation, then the launch proposal.

        Every step derives its trials from the state, and skips those already run, so a run
        continued as new (or a replay) resumes where the last one stopped.
        """
        guard = None
        if not self._stopping:
            guard = asyncio.create_task(self._guard_wall_clock())
        steps = {
            "validation": self._validation,
            "combination": self._combination,
            "exploitation": self._exploitation,
            "confirmation": self._confirmation,
        }
        current = self._state.phase
        first = EVIDENCE_PHASES.index(current) if current in EVIDENCE_PHASES else 0
        for phase in EVIDENCE_PHASES[first:]:
            if self._halted():
                break
            await steps[phase](plan)
            await self._record()
        await self._propose(plan)
        await workflow.wait_condition(workflow.all_handlers_finished)
        if guard is not None:
            guard.cancel()
        result = self._result(plan)
        await self._record()
        return result

    def _halted(self) -> bool:
        return self._stopping or self._budget_closed

    async def _run_batch(
        self,
        specs: list[TrialSpec],
        after: Callable[[TrialSpec, TrialResult], Awaitable[None]] | None = None,
    ) -> None:
        """Run the trials of ``specs`` not yet run (in parallel, within slots and budget);
        ``after`` runs on each result. Hands over to a fresh run when draining."""

        async def one(spec: TrialSpec) -> None:
            result = await self._run_trial(spec)
            if result is not None and after is not None:
                await after(spec, result)

        await asyncio.gather(*(one(s) for s in specs if self._state.trial(s.trial_id) is None))
        if self._draining:
            await workflow.wait_condition(workflow.all_handlers_finished)
            workflow.continue_as_new(args=[self._request, self._state])

    async def _gate(self, phase: str, inp: GateInput) -> GateDecision:
        """The statistical gate (an activity: numpy and scipy stay out of the workflow); its
        decision record is kept in the state, so the reasons are in the history."""
        if phase in self._state.decisions:
            return self._state.decisions[phase]
        decision: GateDecision = await workflow.execute_activity(
            "gate_hypotheses",
            inp,
            result_type=GateDecision,
            start_to_close_timeout=options.RECORD_TIMEOUT,
            retry_policy=options.BOOKKEEPING_RETRY,
            summary=f"{phase} gate: {len(inp.candidates)} candidate(s) vs the baseline",
        )
        self._set(decisions={**self._state.decisions, phase: decision})
        self._update_leader()
        return decision

    def _note(self, phase: str, note: str) -> None:
        if note:
            self._set(phase_notes={**self._state.phase_notes, phase: note})

    async def _validation(self, plan: Plan) -> None:
        request = self._request
        screen_specs = phases.screen_trials(self._id, request, plan)
        self._enter(
            "validation",
            f"Screening {len(screen_specs)} arms: one seed, "
            f"{screen_specs[0].model.epochs} epoch(s).",
        )
        await self._run_batch(screen_specs)
        if self._halted():
            return
        screen = self._state.screen or phases.screen(request, plan, self._state.trials)
        self._set(screen=screen)
        gate_specs = phases.validation_gate_trials(self._id, request, plan, screen)
        self._set(
            message=f"Gate: the baseline and {len(screen.promoted)} promoted hypotheses on "
            f"{request.seeds} seeds ({len(gate_specs)} trials)."
        )
        self._publish()
        await self._run_batch(gate_specs)
        if self._halted():
            return
        seeds = phases.gate_seeds(request)
        await self._gate(
            "validation", phases.gate_input(request, self._state.trials, screen.promoted, seeds)
        )

    async def _combination(self, plan: Plan) -> None:
        request = self._request
        validation = self._state.decisions.get("validation")
        groups, skipped = phases.merges(plan, validation)
        passed = len(validation.passed) if validation else 0
        if not groups:
            why = (
                f"{passed} {'hypothesis' if passed == 1 else 'hypotheses'} passed the gate; "
                "merging needs two"
                if passed < 2
                else "every merge of the passing hypotheses conflicts"
            )
            self._note("combination", "; ".join([f"no merge: {why}", *skipped]))
            return
        self._note("combination", "; ".join(skipped))
        specs = phases.combination_trials(self._id, request, plan, groups)
        arms = [phases.merge_arm(g) for g in groups]
        self._enter("combination", f"Merging {', '.join(arms)} on {request.seeds} seeds.")
        await self._run_batch(specs)
        if self._halted():
            return
        seeds = phases.gate_seeds(request)
        decision = await self._gate(
            "combination", phases.gate_input(request, self._state.trials, arms, seeds)
        )
        assert validation is not None
        self._set(additivity=phases.additivity(validation, decision))

    async def _exploitation(self, plan: Plan) -> None:
        request = self._request
        count = request.exploitation_trials
        if count == 0:
            self._note("exploitation", "exploitation_trials is 0")
            return
        leader = phases.leader(self._state.decisions)
        base_arm = leader.hypothesis_id if leader else phases.BASELINE
        fixed = phases.arm_changes(request, plan, base_arm, self._state.tuned)
        if all(f in fixed for f in phases.TUNED_FIELDS):
            # A change proposed from history may be an earlier campaign's tuned move: it sets
            # every knob exploitation tunes, so there is nothing left to search around it.
            self._note("exploitation", f"{base_arm} already sets {', '.join(phases.TUNED_FIELDS)}")
            return
        space = phases.search_space(fixed)
        study = f"{self._id}/exploitation"
        self._enter(
            "exploitation",
            f"Tuning {', '.join(space.fields)} around {base_arm} ({count} {request.sampler} "
            "trials, pruned by successive halving).",
        )
        per_round = request.budget.max_parallel_trials
        rounds = math.ceil(count / per_round)
        while self._state.search_rounds < rounds and not self._halted():
            done = self._state.search_rounds
            asked: list[AskedTrial] = await workflow.execute_activity(
                "search_ask",
                AskInput(
                    study_name=study,
                    ask_id=f"round-{done}",
                    space=space,
                    sampler=request.sampler,
                    seed=request.baseline.seed,
                    count=min(per_round, count - done * per_round),
                    direction=direction(request.metric),
                ),
                result_type=list[AskedTrial],
                start_to_close_timeout=options.RECORD_TIMEOUT,
                retry_policy=options.BOOKKEEPING_RETRY,
                summary=f"ask the study for round {done + 1} of {rounds}",
            )
            tuned = {phases.tuned_arm(a.number): a.changes for a in asked}
            self._set(tuned={**self._state.tuned, **tuned})
            specs = [
                phases.exploration_trial(self._id, request, plan, a.number, a.changes, study)
                for a in asked
            ]
            await self._run_batch(specs, after=self._tell)
            self._set(search_rounds=done + 1)
        if self._halted():
            return
        best = phases.best_explored(request, self._state.trials)
        if best is None:
            self._note("exploitation", "no tuned trial finished")
            return
        seeds = phases.gate_seeds(request)
        reseed = phases.seeded_trials(
            self._id, request, plan, [(best, "exploitation", self._state.tuned[best])], seeds, "s"
        )
        self._set(message=f"Best tuned move {best}: re-run on {request.seeds} gate seeds.")
        await self._run_batch(reseed)
        if self._halted():
            return
        await self._gate(
            "exploitation", phases.gate_input(request, self._state.trials, [best], seeds)
        )

    async def _tell(self, spec: TrialSpec, result: TrialResult) -> None:
        """Tell the study how a tuned trial ended (complete, pruned or failed)."""
        assert spec.search is not None
        value = result.metric(self._request.metric)
        state = (
            "complete"
            if result.state == "succeeded" and value is not None
            else "pruned"
            if result.state == "pruned"
            else "fail"
        )
        await workflow.execute_activity(
            "search_tell",
            TellInput(
                study_name=spec.search.study_name,
                number=spec.search.number,
                state=state,
                value=value if state == "complete" else None,
                intermediate=result.epoch_values,
            ),
            start_to_close_timeout=options.RECORD_TIMEOUT,
            retry_policy=options.BOOKKEEPING_RETRY,
            summary=f"tell the study {spec.trial_id} {state}",
        )

    async def _confirmation(self, plan: Plan) -> None:
        request = self._request
        leader = phases.leader(self._state.decisions)
        if leader is None:
            self._note("confirmation", "nothing passed a gate: there is nothing to confirm")
            return
        arm = leader.hypothesis_id
        seeds = phases.confirmation_seeds(request)
        changes = phases.arm_changes(request, plan, arm, self._state.tuned)
        specs = phases.seeded_trials(
            self._id,
            request,
            plan,
            [(phases.BASELINE, "confirmation", {}), (arm, "confirmation", changes)],
            seeds,
            "t",
        )
        self._enter(
            "confirmation",
            f"Confirming {arm} against the baseline on the test split, {len(seeds)} fresh seeds.",
        )
        await self._run_batch(specs)
        if self._halted():
            return
        await self._gate(
            "confirmation",
            phases.gate_input(request, self._state.trials, [arm], seeds, split="test"),
        )

    async def _propose(self, plan: Plan) -> None:
        """The launch proposal, or the honest absence of one (also after a stop)."""
        if self._state.proposal is not None:
            return
        request = self._request
        confirmation = self._state.decisions.get("confirmation")
        risks: ModelRisks | None = None
        if confirmation is not None and confirmation.passed:
            arm = confirmation.passed[0]
            candidate = request.baseline.with_changes(
                phases.arm_changes(request, plan, arm, self._state.tuned)
            )
            risks = await workflow.execute_activity(
                "model_footprint",
                FootprintInput(
                    baseline=request.baseline, candidate=candidate, dataset=request.dataset
                ),
                result_type=ModelRisks,
                start_to_close_timeout=options.RECORD_TIMEOUT,
                retry_policy=options.BOOKKEEPING_RETRY,
                summary=f"size of {arm} vs the baseline",
            )
            ratio = phases.trial_time_ratio(
                self._state.trials, arm, phases.confirmation_seeds(request)
            )
            risks = risks.model_copy(update={"trial_time_ratio": ratio})
        proposal = phases.proposal(
            request,
            plan,
            decisions=self._state.decisions,
            screen_decision=self._state.screen,
            additivity_=self._state.additivity,
            tuned=self._state.tuned,
            ledger=self._state.ledger,
            notes=self._state.phase_notes,
            risks=risks,
            ended=(
                "the campaign was stopped"
                if self._stopping
                else "the budget ran out"
                if self._budget_closed
                else ""
            ),
        )
        self._set(proposal=proposal)
        await self._notify(
            Notification(
                campaign_id=self._id,
                kind="launch_proposal",
                goal=self._request.goal,
                approvers=self._request.approvers,
                proposal=proposal,
            )
        )

    async def _notify(self, notification: Notification) -> None:
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
                self._id,
                notification.kind,
                _error_message(err),
            )

    def _update_leader(self) -> None:
        """Best and baseline as the gates see them: means over the gate's seeds, and only a
        candidate that passed a gate (a single run's best is noise)."""
        validation = self._state.decisions.get("validation")
        leader = phases.leader(self._state.decisions)
        changes: dict[str, object] = {}
        if validation is not None and validation.comparisons:
            changes["baseline_metric"] = validation.comparisons[0].baseline_mean
        if leader is not None:
            changes |= {"best_trial_id": leader.hypothesis_id, "best_metric": leader.candidate_mean}
        self._set(**changes)
        self._publish()

    # ---- handlers -------------------------------------------------------------------------

    @workflow.query
    def status(self) -> CampaignStatus:
        """Where the campaign is: phase, plan, approval, trials, best metric, ledger."""
        return self._state

    @workflow.update
    def approve(self, approval: ApproveInput) -> Approval:
        """Approve the pending plan.

        Approving again returns the first approval unchanged; asking for other hours then is
        refused by the validator (that is what ``extend_budget`` is for).
        """
        if self._state.approval is None:
            planned = self._state.plan.budget_device_hours if self._state.plan else None
            hours = approval.device_hours or planned or self._request.budget.device_hours
            preflight = self._state.preflight
            failing = preflight is not None and not preflight.passed
            self._set(
                approval=Approval(
                    approver=approval.approver,
                    comment=approval.comment,
                    approved_at=workflow.now(),
                    device_hours=hours,
                    preflight_override=approval.override_preflight if failing else "",
                ),
                ledger=self._state.ledger.model_copy(update={"approved": hours}),
                message=f"Approved by {approval.approver}: {hours} device-hours.",
            )
        assert self._state.approval is not None
        return self._state.approval

    @approve.validator
    def _validate_approve(self, approval: ApproveInput) -> None:
        # Validators run before anything is written to history: a rejected approval leaves
        # no trace, so a stray click from a Slack bot costs nothing.
        self._check_approver(approval.approver)
        first = self._state.approval
        if first is not None:
            if approval.device_hours is not None and approval.device_hours != first.device_hours:
                raise ApplicationError(
                    f"device_hours: already approved with {first.device_hours:g} device-hours "
                    f"by {first.approver}; add hours with extend_budget "
                    "(`rea campaign extend-budget`)",
                    type="AlreadyApproved",
                    non_retryable=True,
                )
            return
        if self._state.phase != "awaiting_approval":
            raise ApplicationError(
                f"no plan is pending approval (phase is {self._state.phase!r}); "
                "approve once `rea campaign status` shows phase awaiting_approval",
                type="NothingToApprove",
                non_retryable=True,
            )
        if self._rechecking:
            raise ApplicationError(
                "the preflight checklist is running again; approve when it has finished",
                type="PreflightRunning",
                non_retryable=True,
            )
        preflight = self._state.preflight
        if preflight is not None and not preflight.passed and not approval.override_preflight:
            raise ApplicationError(
                f"{preflight.summary()}. Fix it and check again with `rea campaign preflight "
                f"{self._id}`, or approve with --override-preflight REASON (kept in the history)",
                type="PreflightFailed",
                non_retryable=True,
            )

    @workflow.update
    def revise_plan(self, revision: RevisePlanInput) -> Plan:
        """Change the pending plan: drop or pin hypotheses, plan for another budget.

        The planner re-ranks the plan's own candidates (planned and held back); the revised
        plan is what the engineer then approves.
        """
        assert self._state.plan is not None
        plan = planner.revise(self._request, self._state.plan, revision)
        self._set_plan(
            plan,
            message=f"Plan revised by {revision.approver}: {len(plan.hypotheses)} hypotheses, "
            f"estimated {plan.estimated_device_hours:.4g} device-hours.",
        )
        self._publish()
        return plan

    @revise_plan.validator
    def _validate_revise_plan(self, revision: RevisePlanInput) -> None:
        self._check_approver(revision.approver)
        plan = self._state.plan
        if self._state.phase != "awaiting_approval" or plan is None:
            raise ApplicationError(
                f"no plan is pending approval (phase is {self._state.phase!r}); a plan can "
                "only be revised before it is approved",
                type="NothingToRevise",
                non_retryable=True,
            )
        if self._state.planner != "dual-source":
            raise ApplicationError(
                "this campaign's plan was made by the fixed planner of an earlier version and "
                "cannot be revised; approve or stop it",
                type="NotRevisable",
                non_retryable=True,
            )
        if unknown := planner.unknown_ids(plan, [*revision.drop, *revision.pin]):
            known = ", ".join(h.id for h in [*plan.hypotheses, *plan.held_back])
            raise ApplicationError(
                f"drop/pin: unknown hypothesis id(s) {unknown}; the plan's are: {known}",
                type="UnknownHypothesis",
                non_retryable=True,
            )
        left = [h for h in plan.hypotheses + plan.held_back if h.id not in revision.drop]
        if not left:
            raise ApplicationError(
                "drop: that would drop every hypothesis; stop the campaign instead",
                type="EmptyPlan",
                non_retryable=True,
            )

    @workflow.update
    async def recheck_preflight(self, control: ControlInput) -> PreflightReport:
        """Run the preflight checklist again (after fixing what it found). A plan made while
        the data could not be read is made again first, now that its cost can be measured."""
        self._rechecking = True
        try:
            plan = self._state.plan
            if plan is not None and plan.estimated_device_hours_per_trial == 0.0:
                await self._propose_plan()
            await self._preflight()
            assert self._state.plan is not None
            self._ask_for_approval(self._state.plan)
        finally:
            self._rechecking = False
        assert self._state.preflight is not None
        return self._state.preflight

    @recheck_preflight.validator
    def _validate_recheck_preflight(self, control: ControlInput) -> None:
        if self._state.recovery != "runbook" or self._state.phase != "awaiting_approval":
            raise ApplicationError(
                f"no preflight checklist is pending (phase is {self._state.phase!r}); it runs "
                "before a plan is approved",
                type="NothingToCheck",
                non_retryable=True,
            )
        if self._rechecking:
            raise ApplicationError(
                "the preflight checklist is already running",
                type="PreflightRunning",
                non_retryable=True,
            )

    @workflow.update
    def resolve_trial(self, answer: ResolveTrialInput) -> Escalation:
        """An engineer's answer to an escalated trial: retry (as it is or with changes), skip
        it, or stop the campaign. The trial's waiter acts on it."""
        escalations = list(self._state.escalations)
        index = max(
            i
            for i, e in enumerate(escalations)
            if e.trial_id == answer.trial_id and e.resolution is None
        )
        escalations[index] = escalations[index].model_copy(update={"resolution": answer})
        self._set(
            escalations=escalations,
            message=f"{answer.trial_id}: {answer.action} by {answer.approver}"
            + (f" ({answer.comment})" if answer.comment else "")
            + ".",
        )
        self._publish()
        return escalations[index]

    @resolve_trial.validator
    def _validate_resolve_trial(self, answer: ResolveTrialInput) -> None:
        self._check_approver(answer.approver)
        open_ = self._state.open_escalations
        escalation = next((e for e in open_ if e.trial_id == answer.trial_id), None)
        if escalation is None:
            waiting = ", ".join(e.trial_id for e in open_) or "none"
            raise ApplicationError(
                f"trial_id: {answer.trial_id!r} is not waiting for an answer; escalated trials "
                f"waiting now: {waiting}",
                type="NotEscalated",
                non_retryable=True,
            )
        if answer.action == "retry" and answer.changes and escalation.model is not None:
            try:
                escalation.model.with_changes(answer.changes)
            except ValidationError as err:
                raise ApplicationError(
                    f"changes: {_validation_problems(err)}; give ModelSpec fields with valid "
                    'values, e.g. {"batch_size": 256}',
                    type="InvalidChanges",
                    non_retryable=True,
                ) from None

    @workflow.update
    def extend_budget(self, extension: ExtendBudgetInput) -> Ledger:
        """Add device-hours to the approved budget; a campaign halted on budget resumes."""
        self._halting = False
        ledger = self._state.ledger
        self._set(
            ledger=ledger.model_copy(update={"approved": ledger.approved + extension.device_hours}),
            needs_attention="",
            message=f"Budget extended by {extension.device_hours} device-hours "
            f"by {extension.approver}.",
        )
        self._publish()
        return self._state.ledger

    @extend_budget.validator
    def _validate_extend_budget(self, extension: ExtendBudgetInput) -> None:
        self._check_approver(extension.approver)
        if self._state.approval is None:
            raise ApplicationError(
                "the plan is not approved yet; approve it with the budget you want instead",
                type="NotApproved",
                non_retryable=True,
            )
        if self._budget_closed or self._state.phase in ("done", "stopped", "failed"):
            raise ApplicationError(
                f"the campaign is finishing (phase {self._state.phase!r}); start a new one",
                type="CampaignFinishing",
                non_retryable=True,
            )

    def _check_approver(self, approver: str) -> None:
        if approver not in self._request.approvers:
            raise ApplicationError(
                f"approver: {approver!r} may not approve this campaign; "
                f"ask one of {self._request.approvers}",
                type="NotAnApprover",
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
        """Stop: cancel running trials (they checkpoint) and report what has been learned."""
        self._request_stop(self._control_message("Stopped", control))

    @workflow.signal
    def job_finished(self, finished: JobFinishedInput) -> None:
        """An external job reports its result (stale reports of earlier launches are ignored).

        A report can arrive before the campaign has seen its launch complete (a job that
        ends within moments, a busy worker): it is kept by job id until the launch is seen,
        rather than dropped for the fallback poll to find a minute later.
        """
        trial = self._state.trial(finished.trial_id)
        if trial is None:
            return
        if trial.job is not None and trial.job.job_id == finished.job_id:
            self._job_results[finished.trial_id] = finished.result
        elif workflow.patched("early-job-reports"):
            self._early_job_reports[finished.job_id] = finished.result

    def _request_stop(self, reason: str) -> None:
        if self._stopping:
            return
        self._stopping = True
        self._set(stop_reason=reason, message=reason)
        self._cancel_running()
        self._show_details()

    def _cancel_running(self) -> None:
        """Cancel in-worker trials (they checkpoint); external jobs are stopped by their waiters
        (``_wait_for_job`` watches ``_stopping`` and ``_halting``)."""
        for handle in self._running.values():
            if handle is not None and not handle.done():
                handle.cancel()

    # ---- trials ---------------------------------------------------------------------------

    async def _run_trial(self, spec: TrialSpec) -> TrialResult | None:
        """Launch ``spec`` when it fits, wait for it and record it; None when it did not run.

        Under runbooks a failure is diagnosed and remedied (or escalated) before this
        returns: the result is the trial's own last run (a remedy in a linked trial leaves
        it failed)."""
        if not await self._wait_to_launch(spec):
            return None
        if self._state.recovery == "runbook":
            # What the trial may read and write goes with it: its activities enforce it.
            spec = spec.model_copy(update={"access": self._request.access})
        self._add_trial(spec)
        result = await self._train_and_record(spec)
        if (
            self._state.recovery == "runbook"
            and recovery.needs_recovery(spec, result)
            and not self._halted()
        ):
            result = await self._recover(spec, result)
        return result

    def _add_trial(self, spec: TrialSpec) -> None:
        self._set(
            trials=[
                *self._state.trials,
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
        self._launched_this_run += 1
        self._set(
            ledger=self._state.ledger.change(
                policy.ledger_phase(spec.phase), reserved=spec.estimated_device_hours
            ),
        )

    async def _train_and_record(
        self, spec: TrialSpec, attempt: int = 1, remedy: str = ""
    ) -> TrialResult:
        """Train a launched trial (slot claimed, budget reserved), charge and record it."""
        self._running[spec.trial_id] = None
        try:
            if self._request.execution == "in-worker":
                result = await self._train_in_worker(spec)
            else:
                result = await self._train_as_job(spec, attempt)
        finally:
            del self._running[spec.trial_id]
        result = self._finish(spec, result)
        await workflow.execute_activity(
            "record_trial",
            TrialRecord(spec=spec, result=result, remedy=remedy),
            start_to_close_timeout=options.RECORD_TIMEOUT,
            retry_policy=options.BOOKKEEPING_RETRY,
            summary=f"store {spec.trial_id}",
        )
        if (
            policy.exhausted(self._state.ledger)
            and self._request.budget.on_exhausted == "stop-running"
        ):
            self._halting = True
            self._cancel_running()
        return result

    # ---- recovery ---------------------------------------------------------------------------

    async def _recover(self, spec: TrialSpec, result: TrialResult) -> TrialResult:
        """Diagnose a failed trial and apply remedies until one works; escalate what the
        runbooks (and the research agent) cannot fix, and act on the engineer's answer.

        Returns the trial's own result: a placement remedy that worked replaces it; a remedy
        run as a linked trial leaves it as it failed.
        """
        failed_spec, failed = spec, result
        while not self._halted():
            tried = [a for a in self._state.remedies if a.trial_id == spec.trial_id]
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
            self._set(
                remedies=[*self._state.remedies, attempt],
                message=f"{spec.trial_id} {failed.state} ({failed.error_type or failed.state}): "
                f"{recovery.describe(attempt)} as {run.trial_id}.",
            )
            outcome = await self._run_remedy(run, attempt)
            attempt = attempt.model_copy(
                update={
                    "state": outcome.state if outcome else "cancelled",
                    "error_type": outcome.error_type if outcome else "",
                }
            )
            self._set(
                remedies=[
                    attempt if (a.trial_id, a.attempt) == (attempt.trial_id, attempt.attempt) else a
                    for a in self._state.remedies
                ]
            )
            await workflow.execute_activity(
                "record_remedy",
                RemedyRecord(campaign_id=self._id, attempt=attempt),
                start_to_close_timeout=options.RECORD_TIMEOUT,
                retry_policy=options.BOOKKEEPING_RETRY,
                summary=f"store remedy {attempt.attempt} of {spec.trial_id}",
            )
            if outcome is None or not recovery.needs_recovery(run, outcome):
                # A relaunch of the trial itself stands for it; a linked trial never does.
                return outcome if outcome is not None and run.trial_id == spec.trial_id else result
            failed_spec, failed = run, outcome
        return result

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
            return Diagnosis(why_escalate=f"the diagnosis failed: {_error_message(err)}")
        return diagnosis

    async def _run_remedy(self, run: TrialSpec, attempt: RemedyAttempt) -> TrialResult | None:
        """Run a remedy: the same trial again (placement) or a new linked trial; None when it
        could not launch (stopped, budget closed)."""
        rerun = self._state.trial(run.trial_id) is not None
        if not await self._wait_to_launch(run, new_trial=not rerun):
            return None
        if rerun:
            self._update_trial(run.trial_id, state="running", error="", error_type="")
            self._reserve(run)
        else:
            self._add_trial(run)
        return await self._train_and_record(
            run,
            attempt=recovery.job_attempt(self._state.remedies, run.trial_id),
            remedy=recovery.describe(attempt),
        )

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
        escalation = Escalation(
            trial_id=spec.trial_id,
            error_type=failed.error_type,
            error=failed.error,
            diagnosis=diagnosis,
            tried=tried,
            model=failed_spec.model,
        )
        self._set(
            escalations=[*self._state.escalations, escalation],
            message=f"{recovery.escalation_line(escalation)}; answer with "
            f"`rea campaign resolve {self._id} {spec.trial_id} --retry|--skip|--stop`.",
        )
        self._publish()
        await self._notify(
            Notification(
                campaign_id=self._id,
                kind="trial_escalated",
                goal=self._request.goal,
                approvers=self._request.approvers,
                escalation=escalation,
            )
        )

        def answered() -> bool:
            return all(
                e.resolution is not None
                for e in self._state.escalations
                if e.trial_id == spec.trial_id
            )

        try:
            await workflow.wait_condition(
                lambda: answered() or self._stopping,
                timeout=timedelta(hours=self._request.escalation_wait_hours),
                timeout_summary=f"{spec.trial_id}: waiting for an engineer (resolve_trial)",
            )
        except TimeoutError:
            self._set(
                escalations=[
                    e.model_copy(
                        update={
                            "resolution": ResolveTrialInput(
                                approver="(no answer)",
                                trial_id=spec.trial_id,
                                action="skip",
                                comment=f"no answer in {self._request.escalation_wait_hours:g} h",
                            )
                        }
                    )
                    if e.trial_id == spec.trial_id and e.resolution is None
                    else e
                    for e in self._state.escalations
                ]
            )
        answer = next(
            (
                e.resolution
                for e in reversed(self._state.escalations)
                if e.trial_id == spec.trial_id
            ),
            None,
        )
        self._publish()
        if answer is not None and answer.action == "stop":
            who = ControlInput(by=answer.approver, reason=answer.comment or f"{spec.trial_id}")
            self._request_stop(self._control_message("Stopped", who))
        return None if self._stopping else answer

    async def _wait_to_launch(self, spec: TrialSpec, new_trial: bool = True) -> bool:
        """Wait until ``spec`` has a free slot and the ledger affords it, both at once.

        Returns False when it must not launch in this run (stopped, budget closed, or
        draining for continue-as-new). Every wait ends in a fresh check of both conditions:
        trials that woke for an extension or a resume must not all launch past
        ``max_parallel_trials``. Nothing awaits between the last check and the caller's
        claim of the slot, so only one waiter takes a freed slot.
        """
        estimate = spec.estimated_device_hours
        while not (self._stopping or self._budget_closed or self._draining):
            if new_trial and len(self._state.trials) >= self._request.budget.max_trials:
                self._note(policy.ledger_phase(spec.phase), "max_trials reached")
                break
            if policy.should_continue_as_new(
                workflow.info().is_continue_as_new_suggested(), self._launched_this_run
            ):
                self._draining = True
                break
            if not self._slot_free():
                await workflow.wait_condition(
                    lambda: self._stopping or self._slot_free(),
                    timeout_summary=f"{spec.trial_id}: waiting for a free trial slot",
                )
            elif policy.can_afford(estimate, self._state.ledger):
                return True
            elif self._running:
                # Running trials' reservations free up as they finish.
                running = len(self._running)
                await workflow.wait_condition(
                    lambda n=running: self._stopping or len(self._running) < n,  # type: ignore[misc]
                    timeout_summary=f"{spec.trial_id}: waiting for reserved budget to free up",
                )
            else:
                await self._wait_for_extension(spec)
        return False

    def _slot_free(self) -> bool:
        return (
            not self._state.paused and len(self._running) < self._request.budget.max_parallel_trials
        )

    async def _wait_for_extension(self, spec: TrialSpec) -> None:
        """Nothing runs and ``spec`` does not fit: the budget is spent. Ask for more, durably;
        close the budget when no extension comes in time."""
        estimate = spec.estimated_device_hours
        ledger = self._state.ledger
        self._set(
            needs_attention=f"budget exhausted: {ledger.spent:.4f} of {ledger.approved} "
            f"device-hours spent; extend_budget to run {spec.trial_id} and the rest",
        )
        self._publish()
        if self._exhaustion_posted_at != ledger.approved:
            self._exhaustion_posted_at = ledger.approved
            approval = self._state.approval
            await self._notify(
                Notification(
                    campaign_id=self._id,
                    kind="budget_exhausted",
                    goal=self._request.goal,
                    approvers=self._request.approvers,
                    budget_device_hours=ledger.approved,
                    ledger=ledger,
                    # The button adds the originally approved amount again.
                    extend_by_device_hours=approval.device_hours
                    if approval
                    else self._request.budget.device_hours,
                )
            )
        try:
            await workflow.wait_condition(
                lambda: self._stopping or policy.can_afford(estimate, self._state.ledger),
                timeout=timedelta(hours=self._request.budget.extension_wait_hours),
                timeout_summary="waiting for an engineer to extend the budget",
            )
        except TimeoutError:
            self._budget_closed = True
            self._set(message="Budget exhausted and not extended: reporting what we have.")
        self._set(needs_attention="")
        self._publish()

    async def _train_in_worker(self, spec: TrialSpec) -> TrialResult:
        handle = workflow.start_activity(
            "train_trial",
            spec,
            task_queue=options.TRAINING_QUEUE,
            result_type=TrialResult,
            start_to_close_timeout=options.TRIAL_TIMEOUT,
            heartbeat_timeout=timedelta(seconds=self._request.heartbeat_timeout_s),
            retry_policy=options.TRIAL_RETRY,
            # Stop waits until the trainer has acknowledged cancellation: nothing orphaned.
            cancellation_type=workflow.ActivityCancellationType.WAIT_CANCELLATION_COMPLETED,
            summary=f"train {spec.trial_id}",
        )
        self._running[spec.trial_id] = handle
        self._show_details()
        try:
            return await handle
        except ActivityError as err:
            return _failed_result(spec, err)

    async def _train_as_job(self, spec: TrialSpec, attempt: int = 1) -> TrialResult:
        """Launch ``spec`` as an external job and sleep until it reports (or is found dead).

        Under runbooks a lost job comes back as a ``JobLost`` failure, which the runbook
        remedies (a relaunch resumes from the checkpoint); before, it was relaunched here.
        """
        relaunch_here = self._state.recovery != "runbook"
        while True:
            job: JobHandle = await _control_job(
                "launch_job",
                LaunchJobInput(spec=spec, attempt=attempt),
                JobHandle,
                f"launch {spec.trial_id} (attempt {attempt})",
            )
            self._update_trial(spec.trial_id, job=job)
            if job.job_id in self._early_job_reports:  # it reported before its launch was seen
                self._job_results[spec.trial_id] = self._early_job_reports.pop(job.job_id)
            self._show_details()
            status = await self._wait_for_job(job)
            if (
                relaunch_here
                and status.state == "lost"
                and attempt < policy.MAX_JOB_ATTEMPTS
                and not self._stopping
            ):
                attempt += 1
                continue
            if status.result is not None:
                return status.result
            return TrialResult(
                campaign_id=spec.campaign_id,
                trial_id=spec.trial_id,
                state=policy.TRIAL_STATE_OF_JOB[status.state],
                error=status.message or f"job {job.job_id} ended {status.state} without a result",
                # Backends name the failure; older histories' statuses leave it empty.
                error_type=status.error_type or ("JobLost" if status.state == "lost" else ""),
                log_tail=status.log_tail,
                device_hours=status.device_hours or 0.0,
            )

    async def _wait_for_job(self, job: JobHandle) -> JobStatus:
        trial_id = job.trial_id
        polls = 0
        while True:
            try:
                await workflow.wait_condition(
                    lambda: trial_id in self._job_results or self._stopping or self._halting,
                    timeout=policy.job_poll_interval(polls),
                    timeout_summary=f"{trial_id}: job {job.job_id} running (slow poll fallback)",
                )
            except TimeoutError:
                polled: JobStatus = await _control_job(
                    "poll_job", job, JobStatus, f"poll {trial_id}"
                )
                if polled.state != "running":
                    return polled
                polls += 1
                continue
            if trial_id in self._job_results:
                result = self._job_results.pop(trial_id)
                if job.runner not in SCHEDULER_RUNNERS and result is not None:
                    return JobStatus.ended(result)  # a local job charges its own wall time
                # A scheduler's job: its final state and the charge the scheduler accounted.
                settled: JobStatus = await _control_job(
                    "settle_job", job, JobStatus, f"settle {trial_id} (scheduler's record)"
                )
                if settled.state == "running":  # requeued by its scheduler: it runs again
                    polls = 0
                    continue
                return settled
            stopped: JobStatus = await _control_job(
                "stop_job",
                job,
                JobStatus,
                f"stop {trial_id} (checkpoint and exit)",
                timeout=options.JOB_STOP_TIMEOUT,
            )
            return stopped

    def _finish(self, spec: TrialSpec, result: TrialResult) -> TrialResult:
        """Charge and keep a trial's result; returns it as recorded. A trial run again (a
        placement remedy) carries the device-hours of all its runs, so the recorded spends
        add up to the ledger."""
        trial = self._state.trial(spec.trial_id)
        assert trial is not None
        charged = result.device_hours
        if self._state.recovery == "runbook":
            result = result.model_copy(update={"device_hours": trial.device_hours + charged})
        ended = trial.finished(result, ended_at=workflow.now())
        trials = [ended if t is trial else t for t in self._state.trials]
        self._set(
            trials=trials,
            ledger=self._state.ledger.change(
                policy.ledger_phase(spec.phase),
                reserved=-spec.estimated_device_hours,
                spent=charged,
            ),
            message=f"{spec.trial_id} {result.state}.",
        )
        if self._state.protocol == "single-seed":
            metric = self._request.metric
            best = policy.best_trial(trials, metric)
            self._set(
                best_trial_id=best.trial_id if best else "",
                best_metric=best.metric(metric) if best else None,
                baseline_metric=policy.metric_of(trials, policy.BASELINE_TRIAL_ID, metric),
            )
        self._publish()
        return result

    def _update_trial(self, trial_id: str, **changes: Any) -> None:
        self._set(
            trials=[
                t.model_copy(update=changes) if t.trial_id == trial_id else t
                for t in self._state.trials
            ]
        )

    # ---- state and visibility -------------------------------------------------------------

    @property
    def _id(self) -> str:
        return self._state.campaign_id

    def _set(self, **changes: object) -> None:
        self._state = self._state.model_copy(update=changes)

    def _fail(self, failure: ApplicationError) -> ApplicationError:
        """Record why the campaign fails (status, search attributes), then return the error
        that fails the workflow."""
        self._set(error=failure.message, needs_attention=failure.message)
        self._enter("failed", failure.message)
        return failure

    def _enter(self, phase: CampaignPhase, message: str) -> None:
        self._set(phase=phase, message=message)
        self._publish()

    def _publish(self) -> None:
        """Mirror the state into search attributes and current details for the Web UI."""
        s = self._state
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
        self._show_details()

    def _show_details(self) -> None:
        s = self._state
        lines = [
            policy.one_line_summary(s, running=len(self._running)),
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
            f"**running** {', '.join(self._running) or 'nothing'}",
            f"**last** {s.message}",
        ]
        workflow.set_current_details("\n\n".join(line for line in lines if line))

    @staticmethod
    def _control_message(verb: str, control: ControlInput) -> str:
        who = f" by {control.by}" if control.by else ""
        why = f": {control.reason}" if control.reason else ""
        return f"{verb}{who}{why}."

    def _result(self, plan: Plan | None) -> CampaignResult:
        if self._stopping:
            self._enter("stopped", self._state.stop_reason)
        else:
            why = " (budget exhausted and not extended)" if self._budget_closed else ""
            self._enter("done", f"Done{why}: {len(self._state.trials)} trials.")
        proposal = self._state.proposal
        if self._state.protocol == "evidence":
            # Only what the verdict supports: a model and a gain only when it says launch.
            launch = proposal is not None and proposal.verdict == "launch"
            return CampaignResult(
                status=self._state,
                best_model=(
                    self._request.baseline.with_changes(proposal.changes)
                    if launch and proposal
                    else None
                ),
                improvement=(
                    proposal.confirmation.gain
                    if launch and proposal and proposal.confirmation
                    else None
                ),
            )
        best = policy.best_trial(self._state.trials, self._request.metric)
        improvement = None
        if self._state.best_metric is not None and self._state.baseline_metric is not None:
            improvement = relative_gain(
                self._state.best_metric, self._state.baseline_metric, self._request.metric
            )
        return CampaignResult(
            status=self._state,
            best_model=(
                policy.model_for(self._request, plan, best.hypothesis_ids)
                if best and plan
                else None
            ),
            improvement=improvement,
        )


def _validated_request(request: object) -> CampaignRequest:
    """The request as a model; a malformed one fails the workflow with one line per field."""
    try:
        return CampaignRequest.model_validate(request)
    except ValidationError as err:
        raise ApplicationError(
            f"invalid CampaignRequest: {_validation_problems(err)}",
            type="InvalidRequest",
            non_retryable=True,
        ) from None


def _validation_problems(err: ValidationError) -> str:
    """One ``field: problem`` per error, joined."""
    return "; ".join(
        f"{'.'.join(str(p) for p in e['loc']) or '(root)'}: {e['msg']}" for e in err.errors()
    )


async def _control_job(
    name: str,
    arg: object,
    result_type: type,
    summary: str,
    timeout: timedelta = options.JOB_CONTROL_TIMEOUT,
) -> Any:
    """Run a job-control activity (launch, poll, settle, stop) on the jobs queue."""
    return await workflow.execute_activity(
        name,
        arg,
        task_queue=options.JOBS_QUEUE,
        result_type=result_type,
        start_to_close_timeout=timeout,
        retry_policy=options.BOOKKEEPING_RETRY,
        summary=summary,
    )


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


def _error_message(err: ActivityError) -> str:
    """The innermost message of an activity's failure: what the activity itself said."""
    cause: BaseException = err
    while cause.__cause__ is not None:
        cause = cause.__cause__
    return str(cause)
