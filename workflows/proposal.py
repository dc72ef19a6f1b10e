"""The campaign's answer: the launch proposal, or the honest absence of one.

Only what the evidence supports: *launch* only when the confirmation on the test split (seeds
no selection saw) passed. Pure (no temporalio import), unit-tested directly.
"""

from collections.abc import Sequence
from typing import Any

from contracts import (
    Additivity,
    CampaignRequest,
    CampaignStatus,
    Comparison,
    GateDecision,
    LaunchProposal,
    Ledger,
    ModelRisks,
    Plan,
    ScreenDecision,
    TrialSummary,
)
from workflows.arms import BASELINE, arm_changes
from workflows.phases import SELECTION_GATES


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{x * 100:+.2f}%"


def describe(c: Comparison) -> str:
    """A comparison in a few words: gain, interval and adjusted p-value."""
    if c.gain_low is None or c.gain_high is None:
        return f"{c.hypothesis_id}: {c.reason}"
    return (
        f"{c.hypothesis_id}: {_pct(c.gain)} [{_pct(c.gain_low)}, {_pct(c.gain_high)}], "
        f"adjusted p={c.p_adjusted:.3g}, n={c.n}"
    )


def learned(
    decisions: dict[str, GateDecision], additivity_: Sequence[Additivity], notes: dict[str, str]
) -> list[str]:
    """What the campaign learned, one line each, in phase order."""
    lines = []
    for phase in (*SELECTION_GATES, "confirmation"):
        if phase not in decisions:
            continue
        for c in decisions[phase].comparisons:
            verdict = "passed" if c.passed else "not shown to beat the baseline"
            lines.append(f"{phase}: {describe(c)}: {verdict}")
    lines += [f"merge {a.arm}: {a.verdict}" for a in additivity_ if a.verdict != "untested"]
    lines += [f"{phase}: {note}" for phase, note in notes.items()]
    return lines


def launch_proposal(
    request: CampaignRequest,
    plan: Plan,
    *,
    decisions: dict[str, GateDecision],
    screen_decision: ScreenDecision | None,
    additivity_: list[Additivity],
    tuned: dict[str, dict[str, Any]],
    ledger: Ledger,
    notes: dict[str, str],
    risks: ModelRisks | None,
    ended: str = "",
) -> LaunchProposal:
    """The campaign's answer, saying only what the evidence supports.

    *launch* only when the confirmation on the test split (seeds no selection saw) passed:
    its interval excludes zero and its gain is at least the minimum effect.

    Args:
        ended: Why the campaign ended before its last phase (e.g. "stopped"), if it did.
    """
    confirmation = decisions.get("confirmation")
    comparison = confirmation.comparisons[0] if confirmation and confirmation.comparisons else None
    candidate = comparison.hypothesis_id if comparison else ""
    changes = (
        request.baseline.with_changes(arm_changes(request, plan, candidate, tuned)).changes_from(
            request.baseline
        )
        if candidate
        else {}
    )
    launch = comparison is not None and comparison.passed
    metric = request.metric.upper()
    k = request.seeds
    if launch:
        assert comparison is not None
        headline = (
            f"launch {candidate}: test {metric} gain {_pct(comparison.gain)} "
            f"[{_pct(comparison.gain_low)}, {_pct(comparison.gain_high)}] over the baseline "
            f"on {comparison.n} fresh seeds"
        )
    elif comparison is not None:
        headline = (
            f"no launchable improvement: {candidate} passed validation but on the test split "
            f"with {k} fresh seeds its gain is {_pct(comparison.gain)} "
            f"[{_pct(comparison.gain_low)}, {_pct(comparison.gain_high)}]"
        )
    elif ended:
        headline = f"no launchable improvement: {ended} before any change was confirmed"
    else:
        tested = [c for p in SELECTION_GATES if p in decisions for c in decisions[p].comparisons]
        best = max(tested, key=lambda c: c.gain, default=None)
        seen = f"; the best, {describe(best)}" if best is not None else ""
        headline = (
            f"no launchable improvement: no change beat seed noise on validation "
            f"({len(tested)} tested on {k} seeds{seen})"
        )
    return LaunchProposal(
        verdict="launch" if launch else "no launchable improvement",
        candidate=candidate,
        changes=changes,
        confirmation=comparison,
        evidence=dict(decisions),
        screen=screen_decision,
        additivity=list(additivity_),
        device_hours={phase: entry.spent for phase, entry in ledger.phases.items()},
        risks=risks,
        headline=headline,
        learned=learned(decisions, additivity_, notes),
    )


def trial_time_ratio(
    trials: Sequence[TrialSummary], candidate: str, seeds: Sequence[int]
) -> float | None:
    """Mean wall time of the candidate's confirmation runs over the baseline's."""

    def mean_time(arm: str) -> float | None:
        times = [
            t.duration_s for t in trials if t.arm == arm and t.seed in seeds and t.duration_s > 0
        ]
        return sum(times) / len(times) if times else None

    base, cand = mean_time(BASELINE), mean_time(candidate)
    return cand / base if base and cand is not None else None


# ---- a multi-fidelity campaign's account of itself -------------------------------------------


def with_account(
    answer: LaunchProposal,
    request: CampaignRequest,
    plan: Plan,
    state: CampaignStatus,
    interrupted: str = "",
) -> LaunchProposal:
    """``answer`` with what the campaign explored, where its compute went, the rule that
    ended it and what it left unspent.

    Args:
        interrupted: ``stopped`` or ``budget`` when the campaign ended early for that.
    """
    ledger = state.ledger
    unspent = max(0.0, ledger.approved - ledger.spent)
    return answer.model_copy(
        update={
            "explored": explored(request, plan, state),
            "ended_by": f"{stop_rule(answer, state, interrupted)}; {unspent:.4g} of "
            f"{ledger.approved:.4g} approved device-hours unspent",
            "unspent_device_hours": unspent,
        }
    )


def stop_rule(answer: LaunchProposal, state: CampaignStatus, interrupted: str = "") -> str:
    """The rule that ended the campaign, in words."""
    if interrupted == "stopped":
        return "stopped by an engineer"
    if answer.verdict == "launch":
        return f"confirmed {answer.candidate} on the test split"
    if interrupted == "budget":
        return "the budget ran out and was not extended"
    if "confirmation" in state.decisions:
        return "the confirmation on fresh seeds did not support a launch"
    passed = any(state.decisions[g].passed for g in SELECTION_GATES if g in state.decisions)
    if not passed:
        return "no candidate passed a gate: nothing was worth confirming"
    return "the budget left nothing for the confirmation"


def explored(request: CampaignRequest, plan: Plan, state: CampaignStatus) -> list[str]:
    """One line per thing the campaign looked at, and where the compute went."""
    lines = []
    xp = plan.exploration
    if xp is not None and xp.pool:
        sources = ", ".join(f"{n} {source}" for source, n in sorted(xp.pool.items()))
        lines.append(f"pool: {sum(xp.pool.values())} candidates ({sources})")
    for rung in state.rungs:
        scored = sum(v is not None for v in rung.values.values())
        lines.append(
            f"screen rung {rung.rung + 1}: {len(rung.values)} candidates on "
            f"{rung.data_fraction:.0%} of the data ({scored} scored), "
            f"{len(rung.promoted)} went on: {', '.join(rung.promoted) or 'none'}"
        )
    tuned = state.ledger.phases.get("exploitation")
    if state.search_rounds and tuned is not None:
        lines.append(
            f"whole-space search: {state.search_rounds} round(s) of tuning trials, "
            f"{tuned.spent:.4g} device-hours (gates of tuned moves included)"
        )
    for gate in (*SELECTION_GATES, "confirmation"):
        decision = state.decisions.get(gate)
        if decision is None:
            continue
        seeds = max((c.n for c in decision.comparisons), default=0)
        lines.append(
            f"{gate} gate: {len(decision.comparisons)} candidate(s), up to {seeds} seeds, "
            f"passed: {', '.join(decision.passed) or 'none'}"
        )
    spent = ", ".join(f"{p} {e.spent:.4g}" for p, e in state.ledger.phases.items() if e.spent)
    lines.append(f"device-hours spent: {spent or 'none'} (of {state.ledger.approved:.4g})")
    return lines
