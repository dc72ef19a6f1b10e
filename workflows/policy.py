"""Pure decision functions of the campaign: which trials to run, what is best, what is affordable.

No temporalio here, so these are unit-tested directly and stay deterministic by construction.
"""

from collections.abc import Sequence
from datetime import timedelta

from contracts import (
    CampaignRequest,
    CampaignStatus,
    Hypothesis,
    JobState,
    Ledger,
    ModelSpec,
    Phase,
    Plan,
    TrialSpec,
    TrialSummary,
    best_first,
    is_better,
)
from contracts.trial import TrialState

BASELINE_TRIAL_ID = "baseline"

# The trial state of a job that ended without a result (a result carries its own state). A
# lost job (gone without a word) is first relaunched from its checkpoint while attempts
# remain; a job claiming success without a result has failed.
TRIAL_STATE_OF_JOB: dict[JobState, TrialState] = {
    "succeeded": "failed",
    "failed": "failed",
    "cancelled": "cancelled",
    "lost": "failed",
}
MAX_JOB_ATTEMPTS = 3

# Jobs report completion by signal; polling only catches a job that died silently. Poll soon
# after launch (a job that cannot start dies early), then back off: a days-long job costs a
# poll an hour, not thousands of history events.
FIRST_JOB_POLL = timedelta(minutes=1)
MAX_JOB_POLL = timedelta(hours=1)

# A run of the workflow launches at most this many trials before continuing as new, even if
# the server has not suggested it yet: it bounds history size and replay time.
MAX_TRIALS_PER_RUN = 200


def model_for(request: CampaignRequest, plan: Plan, hypothesis_ids: Sequence[str]) -> ModelSpec:
    """The baseline with the changes of ``hypothesis_ids`` applied in order."""
    changes = {h.id: h.changes for h in plan.hypotheses}
    return request.baseline.with_changes(*(changes[i] for i in hypothesis_ids))


def _trial(
    campaign_id: str,
    request: CampaignRequest,
    plan: Plan,
    phase: Phase,
    hypotheses: Sequence[Hypothesis],
) -> TrialSpec:
    ids = [h.id for h in hypotheses]
    return TrialSpec(
        campaign_id=campaign_id,
        trial_id=f"{phase[0]}-{'+'.join(ids)}" if ids else BASELINE_TRIAL_ID,
        phase=phase,
        hypothesis_ids=ids,
        model=model_for(request, plan, ids),
        dataset=request.dataset,
        metric=request.metric,
        estimated_device_hours=plan.estimated_device_hours_per_trial * request.devices_per_trial,
        devices=request.devices_per_trial,
    )


def validation_trials(campaign_id: str, request: CampaignRequest, plan: Plan) -> list[TrialSpec]:
    """The baseline and one trial per hypothesis, within the request's trial cap."""
    specs = [_trial(campaign_id, request, plan, "baseline", [])]
    specs += [_trial(campaign_id, request, plan, "validation", [h]) for h in plan.hypotheses]
    return specs[: request.budget.max_trials]


def improving_hypotheses(
    plan: Plan, trials: Sequence[TrialSummary], metric: str
) -> list[Hypothesis]:
    """Hypotheses whose single-change trial beat the baseline, best first."""
    baseline = metric_of(trials, BASELINE_TRIAL_ID, metric)
    if baseline is None:
        return []
    scored = []
    for hypothesis in plan.hypotheses:
        value = metric_of(trials, f"v-{hypothesis.id}", metric)
        if value is not None and is_better(value, baseline, metric):
            scored.append((value, hypothesis))
    scored.sort(key=lambda pair: best_first(metric) * pair[0])
    return [h for _, h in scored]


def combination_trials(
    campaign_id: str,
    request: CampaignRequest,
    plan: Plan,
    trials: Sequence[TrialSummary],
) -> list[TrialSpec]:
    """Merge the promising hypotheses: all of them, and the best two when there are more.

    A single improving hypothesis has nothing to combine with, so it yields no trial.
    """
    improvers = improving_hypotheses(plan, trials, request.metric)
    groups: list[list[Hypothesis]] = []
    if len(improvers) >= 2:
        groups.append(improvers)
    if len(improvers) >= 3:
        groups.append(improvers[:2])
    room = max(0, request.budget.max_trials - len(trials))
    return [_trial(campaign_id, request, plan, "combination", g) for g in groups][:room]


def fewer_than_planned(
    request: CampaignRequest,
    plan: Plan,
    phase: str,
    count: int,
    trials: Sequence[TrialSummary],
) -> str:
    """Why ``phase`` runs ``count`` trials where the plan announced more; "" when it does not."""
    planned = next((p.trials for p in plan.phases if p.phase == phase), 0)
    if count >= planned:
        return ""
    if phase == "combination":
        improvers = len(improving_hypotheses(plan, trials, request.metric))
        beat = f"{improvers} {'hypothesis' if improvers == 1 else 'hypotheses'} beat the baseline"
        why = (
            f"{beat}; merging needs two" if improvers < 2 else f"{beat}; a second merge needs three"
        )
    else:
        why = f"max_trials is {request.budget.max_trials}"
    return f"{count} of {planned} planned trials: {why}."


def metric_of(trials: Sequence[TrialSummary], trial_id: str, metric: str) -> float | None:
    """The validation ``metric`` of a finished trial, or None."""
    for trial in trials:
        if trial.trial_id == trial_id:
            return trial.metric(metric)
    return None


def best_trial(trials: Sequence[TrialSummary], metric: str) -> TrialSummary | None:
    """The succeeded trial with the best validation ``metric``; the earliest wins ties."""
    best: TrialSummary | None = None
    best_value: float | None = None
    for trial in trials:
        value = trial.metric(metric)
        if value is not None and is_better(value, best_value, metric):
            best, best_value = trial, value
    return best


def ledger_phase(phase: Phase) -> str:
    """The executor phase whose budget pays for a trial: the baseline runs in validation."""
    return "validation" if phase == "baseline" else phase


def can_afford(estimate: float, ledger: Ledger) -> bool:
    """True when reserving ``estimate`` keeps spent + reserved within the approved budget."""
    return estimate <= ledger.remaining + 1e-12


def exhausted(ledger: Ledger) -> bool:
    """True when finished trials have spent the whole approved budget."""
    return ledger.approved > 0 and ledger.spent >= ledger.approved


def job_poll_interval(polls_so_far: int) -> timedelta:
    """How long to sleep before the next fallback poll of a running job."""
    return min(FIRST_JOB_POLL * 2 ** min(polls_so_far, 16), MAX_JOB_POLL)


def should_continue_as_new(suggested: bool, launched_this_run: int) -> bool:
    """Continue as new when the server suggests it or this run has launched enough trials."""
    return suggested or launched_this_run >= MAX_TRIALS_PER_RUN


def one_line_summary(status: CampaignStatus, running: int) -> str:
    """What a campaign is doing, in one line: the first line of its Web UI details.

    E.g. "validation (paused): 3 of 9 trials done, 2 running; 0.41 of 2 device-hours;
    best NE 0.9139 (v-lower-dense-lr)".
    """
    s = status
    parts = []
    if s.plan is not None and s.phase not in ("planning", "awaiting_approval", "failed"):
        done = sum(1 for t in s.trials if t.state != "running")
        parts.append(f"{done} of {s.plan.trials} trials done, {running} running")
    if s.ledger.approved:
        parts.append(f"{s.ledger.spent:.3g} of {s.ledger.approved:g} device-hours")
    if s.proposal is not None:
        parts.append(s.proposal.headline)
    elif s.best_metric is not None:
        # Under the evidence protocol only a change that passed a gate leads.
        label = "best" if s.protocol == "single-seed" else "leading"
        parts.append(f"{label} {s.metric.upper()} {s.best_metric:.5g} ({s.best_trial_id})")
    if s.needs_attention:
        parts.append(f"NEEDS ATTENTION: {s.needs_attention}")
    phase = f"{s.phase} (paused)" if s.paused else s.phase
    return f"{phase}: {'; '.join(parts)}" if parts else phase


def plan_line(plan: Plan) -> str:
    """The pending plan in one Markdown line for the Web UI: its hypotheses with sources."""
    items = ", ".join(f"{h.id} ({h.source})" for h in plan.hypotheses)
    held = f"; {len(plan.held_back)} held back" if plan.held_back else ""
    return (
        f"**plan** {len(plan.hypotheses)} hypotheses, "
        f"{plan.estimated_device_hours:.4g} device-hours: {items}{held}"
    )
