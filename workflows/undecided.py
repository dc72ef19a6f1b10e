"""What the confirmation takes when no gate of a multi-fidelity campaign passed anything,
rather than leave the budget unspent. Pure: unit-tested through the protocol's tests.

A gate filters what the confirmation spends its seeds on; the confirmation alone decides a
launch, and it keeps selection and confirmation apart whatever chose the candidate (the
validation split and other seeds), so its error rate holds. What is lost is the filter.
"""

from typing import NamedTuple

from contracts import CampaignRequest, CampaignStatus, Plan
from workflows import screening, sequential
from workflows.phases import SELECTION_GATES


class Undecided(NamedTuple):
    arm: str
    why: str


def best(
    state: CampaignStatus, request: CampaignRequest, plan: Plan, best_tuned: str | None
) -> Undecided | None:
    """The candidate whose gate the budget stopped (before ``max_seeds``) with its interval
    across the minimum effect, the highest lower end first; else, where the budget stopped
    a gate before its first look, ``best_tuned`` (it beat the screen's best on the same seed
    and data) or the screen's best (if it beat the baseline); else None."""
    assert plan.exploration is not None
    cap = plan.exploration.max_seeds
    straddling = [
        c
        for gate in SELECTION_GATES
        if (decision := state.decisions.get(gate)) is not None
        for c in decision.comparisons
        if c.hypothesis_id in sequential.undecided(decision, request.min_effect) and c.n < cap
    ]
    if straddling:
        top = max(straddling, key=lambda c: (c.gain_low or 0.0, c.hypothesis_id))
        return Undecided(
            top.hypothesis_id,
            f"nothing passed a gate; the budget stopped {top.hypothesis_id}'s gate at {top.n} "
            f"seeds with its interval across the minimum effect ({top.reason}): it goes to "
            "the confirmation",
        )
    looked = {k.split("#")[0] for k in state.looks}
    tuned = best_tuned if "exploitation" not in looked else None
    screened = (
        screening.beat_baseline(state.rungs[-1], request.metric, 1)
        if state.rungs and "validation" not in looked
        else []
    )
    arm = tuned or (screened[0] if screened else None)
    if arm is None:
        return None
    return Undecided(
        arm,
        "nothing passed a gate; the budget could not pay for a gate and the confirmation "
        f"both: {arm}, the best {'tuned move' if tuned else 'of the screen'}, goes to the "
        "confirmation ungated",
    )
