"""Seeds and arms: what a run's seed and arm say, and the trial specs that run them.

Seeds are offsets from the baseline spec's seed, in disjoint sets, so that a run's seed says
what it was for: the screen (offset 0), the gates (1..k), the exploration of exploitation
(k+1) and the final confirmation (1001..1000+k). Runs of two arms with the same seed share
initialisation and data order, so their difference is paired (common random numbers). An arm
names what a run applies: ``baseline``, ``v-<hypothesis>``, ``c-<a>+<b>`` (a merge) or
``x<n>`` (a tuned move).

No temporalio here: unit-tested directly, deterministic by construction.
"""

from collections.abc import Collection, Mapping, Sequence
from typing import Any

from contracts import CampaignRequest, Phase, Plan, SearchRef, TrialSpec

# A run stopped early (a screening rung on part of the data, a tuned trial stopped after
# some epochs) is worth its cost only when it costs at most this share of a full run: at a 72%
# fixed share, rungs of 1/9, 1/3 and 1 cost 1.13 full runs per candidate, one rung 1.0.
MAX_RUNG_COST = 0.5
BASELINE = "baseline"
CONFIRMATION_SEED_OFFSET = 1000


def gate_seeds(request: CampaignRequest, count: int | None = None) -> list[int]:
    """The gates' seeds: the first ``count`` (default ``request.seeds``) after the screen's."""
    return [request.baseline.seed + i for i in range(1, (count or request.seeds) + 1)]


def screen_seed(request: CampaignRequest) -> int:
    return request.baseline.seed


def exploration_seed(request: CampaignRequest) -> int:
    return request.baseline.seed + request.seeds + 1


def confirmation_seeds(request: CampaignRequest, count: int | None = None) -> list[int]:
    """Fresh seeds no selection saw: the first ``count`` (default ``request.seeds``)."""
    first = request.baseline.seed + CONFIRMATION_SEED_OFFSET
    return [first + i for i in range(1, (count or request.seeds) + 1)]


def hypothesis_arm(hypothesis_id: str) -> str:
    return f"v-{hypothesis_id}"


def merge_arm(hypothesis_ids: Sequence[str]) -> str:
    return f"c-{'+'.join(hypothesis_ids)}"


def arm_hypotheses(arm: str, known: Collection[str] = ()) -> list[str]:
    """The hypotheses an arm applies (none for the baseline and tuned arms).

    A merge joins its ids with "+", which an id may itself hold (the knowledge agent's
    ``combo-<a>+<b>``): given the ids there are (``known``), the pieces rejoin into the
    longest known ids, left to right.
    """
    if arm.startswith("v-"):
        return [arm[2:]]
    if not arm.startswith("c-"):
        return []
    pieces = arm[2:].split("+")
    ids: list[str] = []
    start = 0
    while start < len(pieces):
        joins = range(len(pieces), start + 1, -1)
        end = next((e for e in joins if "+".join(pieces[start:e]) in known), start + 1)
        ids.append("+".join(pieces[start:end]))
        start = end
    return ids


def arm_changes(
    request: CampaignRequest, plan: Plan, arm: str, tuned: dict[str, dict[str, Any]]
) -> dict[str, Any]:
    """The changes an arm makes to the baseline (tuned arms' come from the search)."""
    if arm in tuned:
        return tuned[arm]
    by_id = {h.id: h.changes for h in plan.hypotheses}
    merged: dict[str, Any] = {}
    for hypothesis_id in arm_hypotheses(arm, by_id):
        merged.update(by_id[hypothesis_id])
    return merged


def trial_spec(
    campaign_id: str,
    request: CampaignRequest,
    plan: Plan,
    *,
    arm: str,
    phase: Phase,
    changes: dict[str, Any],
    seed: int,
    tag: str,
    epochs: int | None = None,
    search: SearchRef | None = None,
    data_fraction: float = 1.0,
    cost_factor: float | None = None,
    fixed_cost_share: float = 0.0,
) -> TrialSpec:
    """The spec of one run of ``arm`` on ``seed``; its cost estimate follows its fidelity.

    Args:
        epochs: Train this many epochs instead of the arm's own (the first protocol's rung).
        data_fraction: The share of the training data each epoch sees (a screening rung).
        cost_factor: The arm's cost over the baseline's at full fidelity; default the ratio
            of epochs.
        fixed_cost_share: The share of a trial's cost that a data fraction does not shrink.
    """
    model = request.baseline.with_changes(changes, {"seed": seed})
    if epochs is not None:
        model = model.model_copy(update={"epochs": epochs})
    # The plan's per-trial estimate is for the baseline's epochs; a shorter rung costs less.
    fidelity = (
        model.epochs / max(request.baseline.epochs, 1) if cost_factor is None else cost_factor
    )
    if data_fraction < 1.0:
        fidelity *= rung_share(data_fraction, fixed_cost_share)
    devices = request.devices_per_trial if data_fraction >= 1.0 else 1
    estimate = plan.estimated_device_hours_per_trial * devices * fidelity
    return TrialSpec(
        campaign_id=campaign_id,
        trial_id=f"{arm}~{tag}",
        phase=phase,
        hypothesis_ids=arm_hypotheses(arm, {h.id for h in plan.hypotheses}),
        model=model,
        dataset=request.dataset,
        metric=request.metric,
        estimated_device_hours=estimate,
        devices=devices,
        arm=arm,
        search=search,
        data_fraction=data_fraction,
    )


def rung_share(fraction: float, fixed_share: float) -> float:
    """A run's cost on ``fraction`` of the data (or of its epochs) over a full run's."""
    return fixed_share + (1 - fixed_share) * fraction


def last_prunable_epoch(epochs: int, fixed_share: float) -> int:
    """The last epoch after which stopping a tuned trial costs at most ``MAX_RUNG_COST`` of
    running it through (0: none). Where building, data checks and scoring dominate a trial,
    a stop after the first of two epochs saves a quarter of its cost and loses its answer:
    successive halving stops three in four trials, so the search ends with a quarter of the
    finished trials it could have had for three quarters of the compute."""
    cheap = [e for e in range(1, epochs) if rung_share(e / epochs, fixed_share) <= MAX_RUNG_COST]
    return max(cheap, default=0)


def basis_estimate(request: CampaignRequest, plan: Plan, spec: TrialSpec) -> float:
    """What a full-fidelity run of ``spec``'s arm is estimated at before its arm's cost was
    measured: the plan's trial scaled by the arm's epochs (``trial_spec``'s default)."""
    epochs = spec.model.epochs / max(request.baseline.epochs, 1)
    return plan.estimated_device_hours_per_trial * spec.devices * epochs


def merged_cost(
    arm: str, request: CampaignRequest, plan: Plan, costs: Mapping[str, float]
) -> float:
    """A merge's cost over its ``basis_estimate`` before it ran: the product of its parts'
    costs over the baseline's, as measured at full fidelity where both were, else as the
    plan's cost model estimated them (their epochs taken out: the merge's basis has its own).
    On MovieLens-100k the product was 0.9-1.3x what merges cost (high where the parts add
    work to the same step rather than multiply it): a gate budgeted high still leaves the
    confirmation its reserve; one budgeted at the baseline's cost did not."""
    by_id = {h.id: h for h in plan.hypotheses}
    baseline = costs.get(BASELINE)
    factor = 1.0
    for hypothesis_id in arm_hypotheses(arm, by_id):
        part = costs.get(hypothesis_arm(hypothesis_id))
        if part is not None and baseline:
            factor *= part / baseline
        elif hypothesis_id in by_id:
            h = by_id[hypothesis_id]
            epochs = request.baseline.with_changes(h.changes).epochs
            factor *= h.cost_factor * max(request.baseline.epochs, 1) / epochs
    return factor


def seeded_trials(
    campaign_id: str,
    request: CampaignRequest,
    plan: Plan,
    arms: Sequence[tuple[str, Phase, dict[str, Any]]],
    seeds: Sequence[int],
    tag: str,
) -> list[TrialSpec]:
    """Each arm on each seed, seed by seed: a budget cut leaves whole pairs, not one arm."""
    return [
        trial_spec(
            campaign_id,
            request,
            plan,
            arm=arm,
            phase=phase,
            changes=changes,
            seed=seed,
            tag=f"{tag}{i}",
        )
        for i, seed in enumerate(seeds, start=1)
        for arm, phase, changes in arms
    ]


def tuned_arm(number: int) -> str:
    return f"x{number}"
