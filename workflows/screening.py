"""Pure decisions of the multi-fidelity protocol's exploration: the schedule an engineer
approves (how the budget splits, how many candidates each rung screens) and the screen's
successive halving.

The screen runs every candidate of a broad pool once, on the screen's seed, at a small data
fraction; each rung keeps the best ``1/rate`` (ranked by gain over the baseline run at the same
rung and seed, so the values are paired) and runs them on more data, until the last rung trains
on all of it. Most candidates so cost a fraction of a trial, and the catalog's priors only
order the pool: what the rungs measure decides. No temporalio here: unit-tested directly.
"""

import math
from collections.abc import Sequence

from contracts import (
    CampaignRequest,
    ExplorationPlan,
    Hypothesis,
    PhasePlan,
    Plan,
    RungDecision,
    RungPlan,
    TrialSpec,
    TrialSummary,
    relative_gain,
)
from workflows.arms import (
    BASELINE,
    MAX_RUNG_COST,
    hypothesis_arm,
    rung_share,
    screen_seed,
    trial_spec,
)

HALVING_RATE = 3
RUNGS = 3  # data fractions 1/9, 1/3, 1 at rate 3, on data large enough
# The cheapest rung trains at least this many steps: below it a run says nothing (on small
# data the screen has fewer rungs, down to one at full fidelity).
MIN_RUNG_STEPS = 60
# Of exploration's budget, the screen's share; the whole-space search around the leader
# gets the rest.
SCREEN_SHARE = 0.6
# The share of a trial's cost a data fraction does not shrink (building, checks, scoring)
# where the estimate does not say (``Proposals.fixed_cost_share``): 5-10% on MovieLens-100k
# with an early trainer; 35-75% on the benchmark's tasks since.
FIXED_COST_SHARE = 0.1
# At most this many screened candidates go on to a gate (each costs seeds there).
MAX_GATE_CANDIDATES = 3
# Never fewer candidates than this at the first rung, whatever the budget says: a screen
# of one or two is not a screen.
MIN_POOL = 4
# The pool's cap: the plan lists every candidate, and it travels in the campaign's state.
MAX_POOL = 150
# Candidates a screen takes whatever its budget (up to MIN_POOL) cost at most this much.
MAX_FORCED_COST = 2.0
# A screened candidate's cost is budgeted at no more than this many baseline trials: a
# dearer one stops at its cost cap (COST_CAP times this).
MAX_SCREEN_COST = 8.0
# A trial of the whole-space search costs about this many baseline trials on average (its
# points range over every knob; the cost cap stops the dearest).
TUNING_COST = 2.0
# A screened or tuned trial stops (as pruned) past this many times its estimate, corrected
# by what trials actually cost so far.
COST_CAP = 4.0
CONFIRM_TOP = 2


def fractions(full_steps: int | None = None, fixed_share: float | None = None) -> list[float]:
    """The data fraction of each rung, cheapest first: 1/9, 1/3 and 1 (rate 3), unless the
    cheapest would train fewer than ``MIN_RUNG_STEPS`` of the baseline's ``full_steps``: then
    it starts there, with fewer rungs as it nears the whole data. Where the estimate measured
    the ``fixed_share`` of a trial's cost that a fraction does not shrink, a rung that would
    cost more than ``MAX_RUNG_COST`` of a full run is left out (None: not measured, as in
    plans made before it was; every rung is kept)."""
    first = HALVING_RATE ** -(RUNGS - 1)
    if full_steps:
        first = max(first, MIN_RUNG_STEPS / full_steps)
    if first >= 0.6:
        return [1.0]
    fracs = [first, 1.0] if first >= 1 / HALVING_RATE else [first, math.sqrt(first), 1.0]
    if fixed_share is None:
        return fracs
    return [f for f in fracs if f == 1.0 or rung_share(f, fixed_share) <= MAX_RUNG_COST]


def screen_factor(h: Hypothesis) -> float:
    """A candidate's cost factor for the screen's budget: its estimate, at most
    ``MAX_SCREEN_COST`` (a dearer run is stopped at its cost cap, so it costs no more)."""
    return min(h.cost_factor, MAX_SCREEN_COST)


def rung_cost(
    per_trial: float, cost_factor: float, fraction: float, fixed_share: float = FIXED_COST_SHARE
) -> float:
    """Estimated device-hours of one run at ``fraction`` of the data."""
    return per_trial * cost_factor * rung_share(fraction, fixed_share)


def kept(screened: int, rate: int = HALVING_RATE) -> int:
    """How many of ``screened`` go on to the next rung: the best ``1/rate``, but never fewer
    than a gate can take (a small pool still reaches full fidelity with a choice)."""
    return max(math.ceil(screened / rate), min(screened, MAX_GATE_CANDIDATES))


def rung_sizes(pool: int, rungs: int, rate: int = HALVING_RATE) -> list[int]:
    """Candidates at each rung: all of the pool, then what each rung keeps of the last."""
    sizes = [pool]
    for _ in range(rungs - 1):
        sizes.append(kept(sizes[-1], rate))
    return sizes


def screen_cost(
    per_trial: float, cost_factors: Sequence[float], fracs: Sequence[float], fixed_share: float
) -> float:
    """The screen's estimated cost over a pool of these cost factors (baseline runs too)."""
    mean = sum(cost_factors) / len(cost_factors) if cost_factors else 1.0
    sizes = rung_sizes(len(cost_factors), len(fracs))
    total = 0.0
    for k, fraction in enumerate(fracs):
        cost = sum(cost_factors) if k == 0 else sizes[k] * mean
        total += rung_cost(per_trial, cost + 1.0, fraction, fixed_share)  # + the baseline's
    return total


def pool_order(candidates: Sequence[Hypothesis]) -> list[Hypothesis]:
    """The screen's queue: targeted proposals (history, the LLM, the catalog) by expected
    gain per cost, interleaved one for one with the action space's probes and points, so a
    small pool still sees both what is known to work and what nobody thought of."""
    targeted = sorted(
        (h for h in candidates if h.source != "search-space"),
        key=lambda h: (-h.expected_gain / h.cost_factor, h.id),
    )
    space = [h for h in candidates if h.source == "search-space"]
    probes = [h for h in space if h.id.startswith("probe")]
    points = [h for h in space if not h.id.startswith("probe")]
    blind = [x for pair in _zip_longest(probes, points) for x in pair]
    return [x for pair in _zip_longest(targeted, blind) for x in pair]


def _zip_longest(a: Sequence[Hypothesis], b: Sequence[Hypothesis]) -> list[list[Hypothesis]]:
    return [[*a[i : i + 1], *b[i : i + 1]] for i in range(max(len(a), len(b)))]


def exploration_plan(
    request: CampaignRequest,
    per_trial: float,
    ordered: Sequence[Hypothesis],
    budget: float,
    full_steps: int | None = None,
    fixed_share: float | None = None,
) -> tuple[ExplorationPlan, list[Hypothesis]]:
    """Size the schedule to the budget: the pool the screen affords, the tuning trials, the
    gates' candidates and seeds; returns it with the candidates screened.

    Args:
        request: Seeds, the exploration share, the seeds' cap.
        per_trial: Estimated device-hours of a full baseline trial.
        ordered: Every candidate, in the screen's order (``pool_order``).
        budget: The device-hours to size for.
        full_steps: Steps of a full baseline trial (None: unknown), for the rungs' fractions.
        fixed_share: The share of a trial's cost a data fraction does not shrink, as the
            estimate measured it (None: ``FIXED_COST_SHARE``).
    """
    per_trial = per_trial or 1e-9  # an unmeasured estimate: size by counts alone
    first = min(request.seeds, request.max_seeds)
    # The evidence share buys at least one candidate's gates and confirmation; a budget too
    # small for that takes it from exploration, so the plan stays within the budget.
    least = evidence_runs(1, 1, first, request.seeds) * per_trial
    evidence = min(budget, max((1 - request.exploration_share) * budget, least))
    exploration = budget - evidence
    screen_budget = SCREEN_SHARE * exploration
    share = FIXED_COST_SHARE if fixed_share is None else fixed_share
    fracs = fractions(full_steps, fixed_share)
    pool: list[Hypothesis] = []
    for h in ordered:
        if len(pool) == MAX_POOL:
            break
        factors = [*(screen_factor(p) for p in pool), screen_factor(h)]
        cost = screen_cost(per_trial, factors, fracs, share)
        # A candidate the screen cannot afford is skipped, not waited for.
        if cost <= screen_budget or (len(pool) < MIN_POOL and h.cost_factor <= MAX_FORCED_COST):
            pool.append(h)
    factors = [screen_factor(h) for h in pool]
    mean = sum(factors) / len(factors) if factors else 1.0
    sizes = rung_sizes(len(pool), len(fracs))
    rungs = [
        RungPlan(
            rung=k,
            data_fraction=fraction,
            candidates=sizes[k],
            estimated_device_hours=rung_cost(
                per_trial, (sum(factors) if k == 0 else sizes[k] * mean) + 1.0, fraction, share
            ),
        )
        for k, fraction in enumerate(fracs)
    ]
    tuning_budget = exploration - sum(r.estimated_device_hours for r in rungs)
    tuning = max(0, int(tuning_budget / (per_trial * TUNING_COST)))
    gate, confirm = evidence_size(request, per_trial, evidence, sizes[-1], first)
    sources: dict[str, int] = {}
    for h in pool:
        sources[h.source] = sources.get(h.source, 0) + 1
    return (
        ExplorationPlan(
            budget_device_hours=budget,
            exploration_share=request.exploration_share,
            halving_rate=HALVING_RATE,
            rungs=rungs,
            pool=sources,
            tuning_trials=tuning,
            tuning_device_hours=max(0.0, tuning_budget),
            evidence_device_hours=evidence,
            gate_candidates=gate,
            first_look_seeds=first,
            max_seeds=request.max_seeds,
            confirm_top=confirm,
            fixed_cost_share=share,
        ),
        pool,
    )


def evidence_size(
    request: CampaignRequest, per_trial: float, evidence: float, finalists: int, first: int
) -> tuple[int, int]:
    """How many candidates the gate and the confirmation can take on ``evidence``: the most
    (up to ``MAX_GATE_CANDIDATES`` and ``CONFIRM_TOP``) whose first looks fit (the validation
    gate's, its merges', the tuned move's and the confirmation's), at least one each (a budget
    too small even for that is the plan's to say, over its budget)."""
    for gate in range(min(MAX_GATE_CANDIDATES, max(finalists, 1)), 0, -1):
        for confirm in range(min(CONFIRM_TOP, gate), 0, -1):
            if evidence_runs(gate, confirm, first, request.seeds) * per_trial <= evidence:
                return gate, confirm
    return 1, 1


def evidence_runs(gate: int, confirm: int, first: int, seeds: int) -> int:
    """Full-data runs of the gates' first looks (the validation gate with its baseline, its
    merges, the tuned move) and of the confirmation (the confirmed and the baseline)."""
    return (1 + gate + merges(gate) + 1) * first + (1 + confirm) * seeds


def merges(gate_candidates: int) -> int:
    """Merges combination may gate: pairs (and the triple) of what passed, at most three."""
    return min(3, gate_candidates * (gate_candidates - 1) // 2) if gate_candidates > 1 else 0


# ---- the screen's rungs ---------------------------------------------------------------------


def rung_trial_id(arm: str, rung: int) -> str:
    return f"{arm}~r{rung}"


def rung_trials(
    campaign_id: str, request: CampaignRequest, plan: Plan, rung: int, arms: Sequence[str]
) -> list[TrialSpec]:
    """The baseline and ``arms`` at ``rung``'s data fraction, on the screen's seed."""
    assert plan.exploration is not None
    fraction = plan.exploration.rungs[rung].data_fraction
    by_arm = {hypothesis_arm(h.id): h for h in plan.hypotheses}
    runs: list[tuple[str, Hypothesis | None]] = [(BASELINE, None)]
    runs += [(arm, by_arm[arm]) for arm in arms]
    return [
        trial_spec(
            campaign_id,
            request,
            plan,
            arm=arm,
            phase="baseline" if h is None else "validation",
            changes={} if h is None else h.changes,
            seed=screen_seed(request),
            tag=f"r{rung}",
            data_fraction=fraction,
            cost_factor=1.0 if h is None else screen_factor(h),
            fixed_cost_share=plan.exploration.fixed_cost_share,
        ).model_copy(update={"exploratory": h is not None})
        for arm, h in runs
    ]


def decide_rung(
    request: CampaignRequest,
    plan: Plan,
    rung: int,
    arms: Sequence[str],
    trials: Sequence[TrialSummary],
) -> RungDecision:
    """Rank ``arms`` at ``rung`` by gain over the baseline's run at the same rung and seed
    and promote the best ``1/rate``; from the last rung, the best few that beat the baseline
    go on to the gate. A failed run ranks last and never goes on."""
    assert plan.exploration is not None
    xp = plan.exploration
    by_id = {t.trial_id: t for t in trials}

    def value(arm: str) -> float | None:
        t = by_id.get(rung_trial_id(arm, rung))
        v = t.metric(request.metric) if t is not None else None
        return v if v is not None and math.isfinite(v) else None

    base = value(BASELINE)
    values = {arm: value(arm) for arm in arms}

    def gain(arm: str) -> float:
        v = values[arm]
        assert v is not None
        return relative_gain(v, base, request.metric) if base is not None else -v

    ranked = sorted((a for a in arms if values[a] is not None), key=lambda a: (-gain(a), a))
    last = rung == len(xp.rungs) - 1
    if last:
        promoted = [a for a in ranked if base is None or gain(a) > 0][: xp.gate_candidates]
    else:
        promoted = ranked[: kept(len(arms), xp.halving_rate)]
    return RungDecision(
        rung=rung,
        data_fraction=xp.rungs[rung].data_fraction,
        seed=screen_seed(request),
        baseline=base,
        values=values,
        promoted=promoted,
    )


def beat_baseline(decision: RungDecision, metric: str, most: int) -> list[str]:
    """The best ``most`` of the arms a rung promoted that beat the baseline's run there."""
    gains = {a: gain_at(decision, a, metric) for a in decision.promoted}
    return [a for a in decision.promoted if (gains[a] or 0.0) > 0][:most]


def rung_arms(plan: Plan, decided: Sequence[RungDecision], rung: int) -> list[str]:
    """The arms screened at ``rung``: the whole pool first, then what the rung below kept."""
    if rung == 0:
        return [hypothesis_arm(h.id) for h in plan.hypotheses]
    return list(decided[rung - 1].promoted)


def gain_at(decision: RungDecision, arm: str, metric: str) -> float | None:
    """An arm's gain over the baseline at a decided rung (None without both values)."""
    value = decision.values.get(arm)
    if value is None or decision.baseline is None:
        return None
    return relative_gain(value, decision.baseline, metric)


def phase_plans(
    request: CampaignRequest, xp: ExplorationPlan, full_trial: float, spread: float = 1.0
) -> list[PhasePlan]:
    """The schedule as the ledger's phases: the first looks of the gates in their phases,
    and the rest of the evidence budget (more seeds where they decide) with the confirmation.

    Args:
        spread: The estimate's high end over its typical value: the plan uses the budget
            up to where its high end meets it.
    """
    n0, k = xp.first_look_seeds, request.seeds
    gate = (1 + xp.gate_candidates) * n0
    merged = merges(xp.gate_candidates) * n0
    screen = sum(r.estimated_device_hours for r in xp.rungs)
    confirm = (1 + min(xp.confirm_top, xp.gate_candidates)) * k
    first_looks = (gate + merged + n0) * full_trial + screen + xp.tuning_device_hours
    rest = max(confirm * full_trial, xp.budget_device_hours / spread - first_looks)
    rungs = ", ".join(f"{r.candidates} at {r.data_fraction:.0%}" for r in xp.rungs)
    return [
        PhasePlan(
            phase="validation",
            trials=sum(r.candidates + 1 for r in xp.rungs) + gate,
            estimated_device_hours=screen + gate * full_trial,
            condition=f"screen of {rungs} of the data (one seed, the baseline at each rung); "
            f"the best {xp.gate_candidates} then gated on {n0} seeds and more where undecided",
        ),
        PhasePlan(
            phase="combination",
            trials=merged,
            estimated_device_hours=merged * full_trial,
            condition="only merges of candidates that pass the validation gate and do not conflict",
        ),
        PhasePlan(
            phase="exploitation",
            trials=xp.tuning_trials + n0,
            estimated_device_hours=xp.tuning_device_hours + n0 * full_trial,
            condition=f"{xp.tuning_trials} {request.sampler} trials over every knob (pruned "
            "ones cost less), then the best, if it beats the screen's, gated",
        ),
        PhasePlan(
            phase="confirmation",
            trials=confirm,
            estimated_device_hours=rest,
            condition=f"the best {xp.confirm_top} gated candidates by the lower end of their "
            f"interval (the best alone when the budget left cannot give each {xp.max_seeds} "
            f"seeds), on the test split with {k} fresh seeds or as many more as the budget "
            "left affords, in one look",
        ),
    ]
