"""Pure decision functions of the campaign: which trials to run, what is best, what is affordable.

No temporalio here, so these are unit-tested directly and stay deterministic by construction.
"""

from collections.abc import Sequence

from contracts import (
    LOWER_IS_BETTER,
    CampaignRequest,
    Hypothesis,
    Phase,
    Plan,
    TrialRecord,
    TrialSpec,
)

BASELINE_TRIAL_ID = "baseline"


def is_better(candidate: float, incumbent: float | None, metric: str) -> bool:
    """True when ``candidate`` beats ``incumbent`` on ``metric`` (anything beats nothing)."""
    if incumbent is None:
        return True
    return candidate < incumbent if LOWER_IS_BETTER[metric] else candidate > incumbent


def relative_improvement(best: float, baseline: float, metric: str) -> float:
    """Relative improvement of ``best`` over ``baseline``; positive is better on any metric."""
    if baseline == 0:
        return 0.0
    gain = (baseline - best) if LOWER_IS_BETTER[metric] else (best - baseline)
    return gain / abs(baseline)


def _trial(
    campaign_id: str,
    request: CampaignRequest,
    plan: Plan,
    phase: Phase,
    hypotheses: Sequence[Hypothesis],
) -> TrialSpec:
    trial_id = BASELINE_TRIAL_ID if not hypotheses else "+".join(h.id for h in hypotheses)
    return TrialSpec(
        campaign_id=campaign_id,
        trial_id=f"{phase[0]}-{trial_id}" if hypotheses else trial_id,
        phase=phase,
        hypothesis_ids=[h.id for h in hypotheses],
        model=request.baseline.with_changes(*(h.changes for h in hypotheses)),
        dataset=request.dataset,
        metric=request.metric,
        estimated_device_hours=plan.estimated_device_hours_per_trial,
    )


def validation_trials(campaign_id: str, request: CampaignRequest, plan: Plan) -> list[TrialSpec]:
    """The baseline and one trial per hypothesis, within the request's trial cap."""
    specs = [_trial(campaign_id, request, plan, "baseline", [])]
    specs += [_trial(campaign_id, request, plan, "validation", [h]) for h in plan.hypotheses]
    return specs[: request.budget.max_trials]


def improving_hypotheses(
    plan: Plan, records: Sequence[TrialRecord], metric: str
) -> list[Hypothesis]:
    """Hypotheses whose single-change trial beat the baseline, best first."""
    baseline = metric_of(records, BASELINE_TRIAL_ID, metric)
    if baseline is None:
        return []
    scored = []
    for hypothesis in plan.hypotheses:
        value = metric_of(records, f"v-{hypothesis.id}", metric)
        if value is not None and is_better(value, baseline, metric):
            scored.append((value, hypothesis))
    scored.sort(key=lambda pair: pair[0], reverse=not LOWER_IS_BETTER[metric])
    return [h for _, h in scored]


def combination_trials(
    campaign_id: str,
    request: CampaignRequest,
    plan: Plan,
    records: Sequence[TrialRecord],
) -> list[TrialSpec]:
    """Merge the promising hypotheses: all of them, and the best two when there are more.

    A single improving hypothesis has nothing to combine with, so it yields no trial.
    """
    improvers = improving_hypotheses(plan, records, request.metric)
    groups: list[list[Hypothesis]] = []
    if len(improvers) >= 2:
        groups.append(improvers)
    if len(improvers) >= 3:
        groups.append(improvers[:2])
    room = max(0, request.budget.max_trials - len(records))
    return [_trial(campaign_id, request, plan, "combination", g) for g in groups][:room]


def metric_of(records: Sequence[TrialRecord], trial_id: str, metric: str) -> float | None:
    """The validation ``metric`` of a finished trial, or None."""
    for record in records:
        if record.spec.trial_id == trial_id and record.result is not None:
            return record.result.metric(metric)
    return None


def best_record(records: Sequence[TrialRecord], metric: str) -> TrialRecord | None:
    """The succeeded trial with the best validation ``metric``; the earliest wins ties."""
    best: TrialRecord | None = None
    best_value: float | None = None
    for record in records:
        value = None if record.result is None else record.result.metric(metric)
        if value is not None and is_better(value, best_value, metric):
            best, best_value = record, value
    return best


def can_afford(estimate: float, spent: float, reserved: float, approved: float) -> bool:
    """True when launching a trial estimated at ``estimate`` keeps spend within ``approved``."""
    return spent + reserved + estimate <= approved
