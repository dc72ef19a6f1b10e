"""Pure decisions of the evidence protocol: which seeded trials each phase runs, what the
screen promotes, which merges are worth trying, what exploitation tunes, and what the plan
costs phase by phase. Seeds and arms are in ``workflows.arms``; the campaign's answer in
``workflows.proposal``; the confirmation's seeds and split are never seen by any selection.

No temporalio here: unit-tested directly, deterministic by construction.
"""

import math
from collections.abc import Sequence
from typing import Any

from contracts import (
    DEFAULT_ACTION_SPACE,
    Additivity,
    CampaignRequest,
    CandidateRuns,
    Comparison,
    GateDecision,
    GateInput,
    Phase,
    PhasePlan,
    Plan,
    ScreenDecision,
    ScreenResult,
    SearchRef,
    SearchSpace,
    SeededMetric,
    TrialSpec,
    TrialSummary,
    best_first,
    relative_gain,
)
from contracts.evidence import screen_epochs
from workflows.arms import (
    BASELINE,
    arm_changes,
    arm_hypotheses,
    exploration_seed,
    gate_seeds,
    hypothesis_arm,
    merge_arm,
    screen_seed,
    seeded_trials,
    trial_spec,
    tuned_arm,
)

# Merges tried in combination, best-first; each costs ``seeds`` trials.
MAX_MERGES = 3
# The knobs exploitation tunes around the best candidate: the continuous ones that move NE
# without changing the model's serving cost (widths and dims change it, and are hypotheses).
TUNED_FIELDS = ("dense_lr", "sparse_lr", "dropout", "weight_decay")
# Gates whose passes may become the launch candidate, in the order they run.
SELECTION_GATES = ("validation", "combination", "exploitation")


# ---- validation: the screen and the gate ---------------------------------------------------


def screen_trials(campaign_id: str, request: CampaignRequest, plan: Plan) -> list[TrialSpec]:
    """Validation's cheap first rung: the baseline and every hypothesis, one seed, fewer
    epochs."""
    arms: list[tuple[str, Phase, dict[str, Any]]] = [(BASELINE, "baseline", {})]
    arms += [(hypothesis_arm(h.id), "validation", h.changes) for h in plan.hypotheses]
    return [
        trial_spec(
            campaign_id,
            request,
            plan,
            arm=arm,
            phase=phase,
            changes=changes,
            seed=screen_seed(request),
            tag="r0",
            epochs=screen_epochs(request.baseline.with_changes(changes).epochs),
        )
        for arm, phase, changes in arms
    ]


def promoted_count(hypotheses: int) -> int:
    """Successive halving with rate 2: the better half goes on."""
    return math.ceil(hypotheses / 2)


def screen(request: CampaignRequest, plan: Plan, trials: Sequence[TrialSummary]) -> ScreenDecision:
    """Rank the first rung by gain over the baseline at the same rung and seed; promote the
    better half. A run that failed or diverged is dropped."""
    seed = screen_seed(request)
    rung = {t.arm: t.metric(request.metric) for t in trials if t.seed == seed}
    base = rung.get(BASELINE)
    scored: list[tuple[float, str]] = []
    results: dict[str, ScreenResult] = {}
    for hypothesis in plan.hypotheses:
        arm = hypothesis_arm(hypothesis.id)
        value = rung.get(arm)
        if value is None:
            results[arm] = ScreenResult(arm=arm, reason="no result at this rung (failed)")
            continue
        gain = relative_gain(value, base, request.metric) if base is not None else None
        results[arm] = ScreenResult(arm=arm, value=value, gain=gain)
        # Without a baseline run the raw value still ranks the arms.
        scored.append((gain if gain is not None else -value, arm))
    scored.sort(key=lambda pair: (-pair[0], pair[1]))
    keep = promoted_count(len(plan.hypotheses))
    promoted = [arm for _, arm in scored[:keep]]
    for rank, (_, arm) in enumerate(scored, start=1):
        where = f"rank {rank} of {len(scored)} at the first rung"
        results[arm] = results[arm].model_copy(
            update={
                "promoted": arm in promoted,
                "reason": f"{where}: in the better half"
                if arm in promoted
                else f"{where}: dropped (the better {keep} go on)",
            }
        )
    ordered = [results[a] for a in promoted] + [r for a, r in results.items() if a not in promoted]
    return ScreenDecision(
        epochs=screen_epochs(request.baseline.epochs),
        seed=seed,
        results=ordered,
        promoted=promoted,
    )


def validation_gate_trials(
    campaign_id: str, request: CampaignRequest, plan: Plan, decision: ScreenDecision
) -> list[TrialSpec]:
    """The baseline and every promoted hypothesis at full fidelity on the gate's seeds."""
    changes = {hypothesis_arm(h.id): h.changes for h in plan.hypotheses}
    arms: list[tuple[str, Phase, dict[str, Any]]] = [(BASELINE, "baseline", {})]
    arms += [(arm, "validation", changes[arm]) for arm in decision.promoted]
    return seeded_trials(campaign_id, request, plan, arms, gate_seeds(request), "s")


def gate_input(
    request: CampaignRequest,
    trials: Sequence[TrialSummary],
    arms: Sequence[str],
    seeds: Sequence[int],
    split: str = "validation",
) -> GateInput:
    """The seeded runs of ``arms`` and of the baseline on ``seeds``, for the gate."""

    def runs(arm: str) -> list[SeededMetric]:
        out = []
        for t in trials:
            if t.arm != arm or t.seed not in seeds:
                continue
            value = t.test_metric(request.metric) if split == "test" else t.metric(request.metric)
            if value is not None and math.isfinite(value):
                out.append(SeededMetric(seed=t.seed, value=value))
        return out

    return GateInput(
        metric=request.metric,
        baseline=runs(BASELINE),
        candidates=[CandidateRuns(hypothesis_id=arm, runs=runs(arm)) for arm in arms],
        alpha=request.alpha,
        min_effect=request.min_effect,
        split="test" if split == "test" else "validation",
    )


# ---- combination ---------------------------------------------------------------------------


def merges(
    plan: Plan, decision: GateDecision | None, skip_repeats: bool = False
) -> tuple[list[list[str]], list[str]]:
    """The merges worth trying, best-first, and the ones skipped because their parts conflict
    (or, with ``skip_repeats``, because they change what a part or an earlier merge already
    does: a merged hypothesis ``combo-a+b`` with ``b`` is ``combo-a+b`` again).

    Candidates are the pairs and the triple of the (up to) three best hypotheses that passed
    the validation gate, ranked by the sum of their parts' gains. Conflicting parts (the
    same field, or exclusive choices such as two interaction types) are never stacked: such a
    merge is skipped, which resolves the conflict in favour of the stronger part, already
    tried in its own arm and in its other merges.
    """
    if decision is None:
        return [], []
    gains = {c.hypothesis_id: c.gain for c in decision.comparisons}
    passed = [arm_hypotheses(arm)[0] for arm in decision.passed if arm.startswith("v-")]
    top = passed[:3]
    groups = [[a, b] for i, a in enumerate(top) for b in top[i + 1 :]]
    if len(top) == 3:
        groups.append(list(top))
    groups.sort(key=lambda g: -sum(gains[hypothesis_arm(h)] for h in g))
    changes = {h.id: h.changes for h in plan.hypotheses}
    chosen: list[list[str]] = []
    skipped: list[str] = []
    tried = [changes[h] for h in passed]  # what the gate's arms, then chosen merges, change
    for group in groups:
        clashes = [
            f"{a} vs {b}: {'; '.join(reasons)}"
            for i, a in enumerate(group)
            for b in group[i + 1 :]
            if (reasons := DEFAULT_ACTION_SPACE.conflicts(changes[a], changes[b]))
        ]
        merged = {k: v for h in group for k, v in changes[h].items()}
        # A part whose every change another part makes adds nothing: the smaller merge
        # without it is tried instead (or is an arm already).
        idle = [h for h in group if changes[h].items() <= _others(group, h, changes).items()]
        if clashes:
            skipped.append(f"{merge_arm(group)} not tried: {'; '.join(clashes)}")
        elif skip_repeats and (idle or merged in tried):
            why = f"{idle[0]} adds nothing" if idle else "it changes what an arm tried changes"
            skipped.append(f"{merge_arm(group)} not tried: {why}")
        elif len(chosen) < MAX_MERGES:
            chosen.append(group)
            tried.append(merged)
    return chosen, skipped


def _others(group: Sequence[str], part: str, changes: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """What the parts of ``group`` other than ``part`` change, together."""
    return {k: v for h in group if h != part for k, v in changes[h].items()}


def combination_trials(
    campaign_id: str, request: CampaignRequest, plan: Plan, groups: Sequence[Sequence[str]]
) -> list[TrialSpec]:
    arms: list[tuple[str, Phase, dict[str, Any]]] = [
        (merge_arm(g), "combination", arm_changes(request, plan, merge_arm(g), {})) for g in groups
    ]
    return seeded_trials(campaign_id, request, plan, arms, gate_seeds(request), "s")


def additivity(validation: GateDecision, combination: GateDecision) -> list[Additivity]:
    """Each merge's gain against the sum of its parts' validated gains."""
    parts_gain = {c.hypothesis_id: c.gain for c in validation.comparisons}
    validated = {h for arm in parts_gain for h in arm_hypotheses(arm)}
    records = []
    for merged in combination.comparisons:
        parts = arm_hypotheses(merged.hypothesis_id, validated)
        expected = sum(parts_gain.get(hypothesis_arm(p), 0.0) for p in parts)
        record = Additivity(arm=merged.hypothesis_id, parts=parts, parts_gain=expected)
        if merged.gain_low is not None:  # tested: it has an interval
            ratio = merged.gain / expected if expected > 0 else None
            verdict = (
                "hurts"
                if merged.gain < 0
                else "synergy"
                if ratio is not None and ratio > 1.1
                else "additive"
                if ratio is not None and ratio >= 0.9
                else "overlapping"
            )
            record = record.model_copy(
                update={"gain": merged.gain, "ratio": ratio, "verdict": verdict}
            )
        records.append(record)
    return records


# ---- exploitation --------------------------------------------------------------------------


def leader(decisions: dict[str, GateDecision]) -> Comparison | None:
    """The passed comparison with the largest validated gain across the selection gates."""
    passed = [
        c for phase in SELECTION_GATES if phase in decisions for c in decisions[phase].comparisons
    ]
    passed = [c for c in passed if c.passed]
    return max(passed, key=lambda c: c.gain, default=None)


def search_space(fixed: dict[str, Any]) -> SearchSpace:
    """Tune the continuous knobs around ``fixed`` (the candidate's own changes stay)."""
    fields = [f for f in TUNED_FIELDS if f not in fixed]
    return SearchSpace(fields=fields, fixed=fixed)


def exploration_trial(
    campaign_id: str,
    request: CampaignRequest,
    plan: Plan,
    number: int,
    changes: dict[str, Any],
    study_name: str,
) -> TrialSpec:
    """One Optuna move on the exploration seed, reporting its epochs to the study."""
    return trial_spec(
        campaign_id,
        request,
        plan,
        arm=tuned_arm(number),
        phase="exploitation",
        changes=changes,
        seed=exploration_seed(request),
        tag="x",
        search=SearchRef(study_name=study_name, number=number),
    )


def best_explored(request: CampaignRequest, trials: Sequence[TrialSummary]) -> str | None:
    """The tuned arm with the best validation value on the exploration seed."""
    seed = exploration_seed(request)
    scored = [
        (value, t.arm)
        for t in trials
        if t.phase == "exploitation"
        and t.seed == seed
        and not t.remedy_of  # a remedy's run is not the tuned move the study asked for
        and (value := t.metric(request.metric)) is not None
    ]
    if not scored:
        return None
    sign = best_first(request.metric)
    return min(scored, key=lambda pair: (sign * pair[0], pair[1]))[1]


# ---- the plan ------------------------------------------------------------------------------


def with_phases(request: CampaignRequest, plan: Plan) -> Plan:
    """The planner's hypotheses and per-trial estimate, costed phase by phase for this
    protocol (seeds included); conditional phases are costed at their most."""
    k, n = request.seeds, len(plan.hypotheses)
    per_trial = plan.estimated_device_hours_per_trial * request.devices_per_trial
    rung = screen_epochs(request.baseline.epochs) / max(request.baseline.epochs, 1)
    gated = (1 + promoted_count(n)) * k
    merges_ = MAX_MERGES * k if n >= 2 else 0
    tuned = request.exploitation_trials + k if request.exploitation_trials else 0
    return plan.model_copy(
        update={
            "phases": [
                PhasePlan(
                    phase="validation",
                    trials=n + 1 + gated,
                    estimated_device_hours=((n + 1) * rung + gated) * per_trial,
                    condition=(
                        f"{n + 1} screening runs ({screen_epochs(request.baseline.epochs)} "
                        f"epoch(s), one seed), then the baseline and the better half on {k} "
                        "seeds each"
                    ),
                ),
                PhasePlan(
                    phase="combination",
                    trials=merges_,
                    estimated_device_hours=merges_ * per_trial,
                    condition=f"up to {MAX_MERGES} merges on {k} seeds, only of hypotheses "
                    "that pass the validation gate and do not conflict",
                ),
                PhasePlan(
                    phase="exploitation",
                    trials=tuned,
                    estimated_device_hours=tuned * per_trial,
                    condition=f"{request.exploitation_trials} {request.sampler} trials (pruned "
                    f"ones cost less), then the best on {k} seeds",
                ),
                PhasePlan(
                    phase="confirmation",
                    trials=2 * k,
                    estimated_device_hours=2 * k * per_trial,
                    condition=f"only when a change passes a gate: it and the baseline on {k} "
                    "fresh seeds, on the test split",
                ),
            ]
        }
    )
