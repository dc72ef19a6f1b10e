"""The planner's decisions: merge the sources' proposals into the plan an engineer approves.

Pure and deterministic (no temporalio import), so the workflow can re-plan inside an update
handler and the rules are unit-tested directly. The activities propose (and measure cost); this
module only decides what goes in.
"""

import heapq
from collections import Counter
from collections.abc import Iterable, Sequence

from contracts import (
    CampaignRequest,
    Hypothesis,
    Plan,
    Proposals,
    RevisePlanInput,
    TaskDescriptor,
    canonical,
)
from workflows import phases, screening

# The best proposal of each source gets a place before the rest compete on expected gain per
# cost: a source's ideas are only tested (and so learned from) if some of them run.
DIVERSITY_PENALTY = 0.5  # a family's score is halved for each of its hypotheses already in


def merge(proposals: Sequence[Proposals]) -> list[Hypothesis]:
    """Every source's hypotheses once: a move proposed twice keeps the higher expected gain
    (its provenance with it, noting the other sources); ids stay unique."""
    best: dict[str, Hypothesis] = {}
    others: dict[str, set[str]] = {}
    for source in proposals:
        for h in source.hypotheses:
            key = canonical(h.changes)
            if key not in best or h.expected_gain > best[key].expected_gain:
                if key in best:
                    others.setdefault(key, set()).add(best[key].source)
                best[key] = h
            else:
                others.setdefault(key, set()).add(h.source)
    seen: set[str] = set()
    out = []
    for key, h in best.items():
        hid, n = h.id, 2
        while hid in seen:
            hid, n = f"{h.id}-{n}", n + 1
        seen.add(hid)
        update: dict[str, object] = {"id": hid}
        also = sorted(others.get(key, set()) - {h.source})
        if also and h.provenance is not None:
            evidence = "; ".join(
                x for x in (h.provenance.evidence, f"also proposed by {', '.join(also)}") if x
            )
            update["provenance"] = h.provenance.model_copy(update={"evidence": evidence})
        out.append(h.model_copy(update=update))
    return out


def score(h: Hypothesis) -> float:
    """Expected gain per unit of cost."""
    return h.expected_gain / h.cost_factor


def rank(candidates: Iterable[Hypothesis], pinned: Sequence[str] = ()) -> list[Hypothesis]:
    """Pinned first, then the best of each source, then greedily by score with a penalty for
    families already represented (diversity); ties by id, so the order is deterministic.

    The greedy pass is lazy: a penalty only ever lowers a score, so a candidate whose
    re-scored value still beats every stale one is the true best (n log n, not n², which a
    workflow task of a thousand hypotheses needs).
    """
    pool = sorted(candidates, key=lambda h: (-score(h), h.id))
    chosen = [h for h in pool if h.id in pinned]
    for source in sorted({h.source for h in pool}):
        first = next((h for h in pool if h.source == source and h not in chosen), None)
        if first is not None and not any(c.source == source for c in chosen):
            chosen.append(first)
    families: Counter[str] = Counter(f for c in chosen for f in c.families)
    taken = {id(c) for c in chosen}
    heap = [(-score(h), h.id, i) for i, h in enumerate(pool) if id(h) not in taken]
    heapq.heapify(heap)
    while heap:
        _, hid, i = heapq.heappop(heap)
        fresh = (-_diverse_score(pool[i], families), hid, i)
        if heap and fresh > heap[0]:
            heapq.heappush(heap, fresh)  # stale: its family filled up since it was scored
            continue
        chosen.append(pool[i])
        families.update(pool[i].families)
    return chosen


def _diverse_score(h: Hypothesis, families: Counter[str]) -> float:
    """``score`` halved for each hypothesis already chosen in one of its families; a penalty
    shrinks a positive score and must not lift a negative one."""
    repeats = sum(families[f] for f in h.families)
    s = score(h)
    return s * DIVERSITY_PENALTY**repeats if s > 0 else s


def _cost(request: CampaignRequest, base: Plan, hypotheses: list[Hypothesis]) -> float:
    return phases.with_phases(
        request, base.model_copy(update={"hypotheses": hypotheses})
    ).estimated_device_hours


def build_plan(
    request: CampaignRequest,
    proposals: Sequence[Proposals],
    *,
    pinned: Sequence[str] = (),
    budget_device_hours: float | None = None,
    notes: Sequence[str] = (),
) -> Plan:
    """The plan: the ranked hypotheses that fit the budget and ``request.max_hypotheses``.

    At least two are kept when two exist (one cannot be merged with anything), more while the
    whole protocol's estimate stays within the budget; pinned ones are always kept. The rest
    are held back, in rank order, for an engineer to pin.

    Args:
        request: The campaign request (budget, seeds, limits).
        proposals: Each source's proposals; the first that estimated a trial's cost sets it.
        pinned: Hypothesis ids kept whatever their rank.
        budget_device_hours: The budget to plan for (a revision's); default the request's.
        notes: Carried into the plan for people to read.
    """
    costed = next((p for p in proposals if p.estimated_device_hours_per_trial > 0), None)
    per_trial = costed.estimated_device_hours_per_trial if costed else 0.0
    high = costed.estimated_device_hours_per_trial_high if costed else 0.0
    base = Plan(hypotheses=[], phases=[], estimated_device_hours_per_trial=per_trial)
    budget = budget_device_hours or request.budget.device_hours
    ranked = rank(merge(proposals), pinned)
    # The budget can never drop a pin; beyond the pins, each hypothesis must fit.
    keep = sum(1 for h in ranked if h.id in pinned)
    limit = max(request.max_hypotheses, keep)
    floor = min(2, len(ranked), limit)
    n = max(keep, floor)
    while n < min(limit, len(ranked)) and _cost(request, base, ranked[: n + 1]) <= budget:
        n += 1
    planned, held = ranked[:n], ranked[n:]
    kept_down_to = {
        h.id: round(_cost(request, base, planned[: i + 1]), 6) for i, h in enumerate(planned)
    }
    sources = sorted({h.source for h in planned})
    plan_notes = [*(p.note for p in proposals if p.note), *notes]
    if held:
        plan_notes.append(
            f"{len(held)} more proposal(s) held back by the budget or max_hypotheses "
            f"({request.max_hypotheses}); pin one to test it"
        )
    plan_notes.append(f"hypotheses from: {', '.join(sources) or 'no source'}")
    return phases.with_phases(
        request,
        Plan(
            hypotheses=planned,
            phases=[],
            estimated_device_hours_per_trial=per_trial,
            estimated_device_hours_per_trial_high=high,
            held_back=held,
            pinned=[h.id for h in planned if h.id in pinned],
            kept_down_to=kept_down_to,
            notes=plan_notes,
            budget_device_hours=budget_device_hours,
            compute_target=compute_target(request, costed),
        ),
    )


def full_steps(request: CampaignRequest, rows: int) -> int | None:
    """Steps of a full baseline trial on ``rows`` rows in all splits (None: unknown)."""
    if rows <= 0:
        return None
    dataset, baseline = request.dataset, request.baseline
    train = rows * (1 - dataset.validation_fraction - dataset.test_fraction)
    return max(1, int(train / baseline.batch_size)) * baseline.epochs


def compute_target(request: CampaignRequest, costed: Proposals | None) -> str:
    """Where the plan's estimate assumes trials run."""
    if request.execution == "in-worker":
        return "training workers (measured on the planning host)"
    return costed.jobs_run_on if costed and costed.jobs_run_on else ""


def revise(
    request: CampaignRequest,
    plan: Plan,
    revision: RevisePlanInput,
    task: TaskDescriptor | None = None,
) -> Plan:
    """The plan re-made from its own candidates (planned and held back) with the engineer's
    drops, pins and budget (``task``: what the first plan measured of the data)."""
    drop = set(revision.drop)
    pool = [h for h in [*plan.hypotheses, *plan.held_back] if h.id not in drop]
    pinned = [p for p in [*plan.pinned, *revision.pin] if p not in drop]
    by_source = Proposals(
        source="knowledge",
        hypotheses=pool,
        estimated_device_hours_per_trial=plan.estimated_device_hours_per_trial,
        estimated_device_hours_per_trial_high=plan.estimated_device_hours_per_trial_high,
        task=task,
    )
    what = [
        f"dropped {', '.join(revision.drop)}" if revision.drop else "",
        f"pinned {', '.join(revision.pin)}" if revision.pin else "",
        f"budget {revision.device_hours:g} device-hours" if revision.device_hours else "",
        f'"{revision.comment}"' if revision.comment else "",
    ]
    # The notes build_plan writes afresh are left out; sources' notes and earlier revisions stay.
    earlier = [
        n for n in plan.notes if not n.startswith("hypotheses from") and "held back" not in n
    ]
    build = build_screen_plan if plan.exploration is not None else build_plan
    return build(
        request,
        [by_source],
        pinned=pinned,
        budget_device_hours=revision.device_hours or plan.budget_device_hours,
        notes=[*earlier, f"revised by {revision.approver}: {'; '.join(w for w in what if w)}"],
    )


def unknown_ids(plan: Plan, ids: Iterable[str]) -> list[str]:
    """The ids that are neither planned nor held back (for the revision's validator)."""
    known = {h.id for h in [*plan.hypotheses, *plan.held_back]}
    return sorted(set(ids) - known)


# ---- the multi-fidelity protocol's plan ------------------------------------------------------

# Held-back candidates kept in the plan for an engineer to pin (the action space's own draws
# are not: another draw is as good as a held-back one).
MAX_HELD_BACK = 40


def build_screen_plan(
    request: CampaignRequest,
    proposals: Sequence[Proposals],
    *,
    pinned: Sequence[str] = (),
    budget_device_hours: float | None = None,
    notes: Sequence[str] = (),
) -> Plan:
    """The multi-fidelity plan: the pool the screen affords and the schedule of the budget.

    Pinned candidates head the pool; the rest follow ``screening.pool_order``. The schedule
    (rungs, tuning trials, gates' seeds, the confirmation) is sized so that the whole budget
    is used: what the first looks of the gates do not need buys more seeds where a
    candidate's interval straddles the minimum effect.
    """
    costed = next((p for p in proposals if p.estimated_device_hours_per_trial > 0), None)
    per_trial = costed.estimated_device_hours_per_trial if costed else 0.0
    high = costed.estimated_device_hours_per_trial_high if costed else 0.0
    budget = budget_device_hours or request.budget.device_hours
    candidates = merge(proposals)
    ordered = [h for h in candidates if h.id in pinned]
    ordered += screening.pool_order([h for h in candidates if h.id not in pinned])
    full_trial = per_trial * request.devices_per_trial
    task = next((p.task for p in proposals if p.task is not None), None)
    # Sized so that the plan's high end meets the budget: at run time, with actual costs
    # known, the search goes on while the budget lasts (see ``MultiFidelityProtocol``).
    spread = max(high, per_trial) / per_trial if per_trial else 1.0
    xp, pool = screening.exploration_plan(
        request,
        full_trial,
        ordered,
        budget / spread,
        full_steps(request, task.rows if task else 0),
        costed.fixed_cost_share if costed else None,
    )
    xp = xp.model_copy(update={"budget_device_hours": budget})
    in_pool = {h.id for h in pool}
    held = [h for h in ordered if h.id not in in_pool and h.source != "search-space"]
    sources = ", ".join(f"{n} {s}" for s, n in sorted(xp.pool.items()))
    plan_notes = [*(p.note for p in proposals if p.note), *notes]
    measured = costed is not None and costed.fixed_cost_share is not None
    fixed = f" (fixed costs: {xp.fixed_cost_share:.0%} of a trial)" if measured else ""
    plan_notes.append(
        f"screen: {len(pool)} candidates ({sources}) by successive halving on "
        + ", ".join(f"{r.data_fraction:.0%}" for r in xp.rungs)
        + f" of the training data{fixed}; then a whole-space search of "
        f"{xp.tuning_trials} trials; gates start at {xp.first_look_seeds} seeds and grow to "
        f"{xp.max_seeds} only where an interval straddles the minimum effect"
    )
    return Plan(
        hypotheses=pool,
        phases=screening.phase_plans(request, xp, full_trial, spread=spread),
        estimated_device_hours_per_trial=per_trial,
        estimated_device_hours_per_trial_high=high,
        held_back=held[:MAX_HELD_BACK],
        pinned=[h.id for h in pool if h.id in pinned],
        notes=plan_notes,
        budget_device_hours=budget_device_hours,
        compute_target=compute_target(request, costed),
        exploration=xp,
    )
