"""Evidence where it decides: how many seeds a gate spends, look by look.

A gate first looks at every candidate on a few paired seeds. A candidate whose interval
already lies above the minimum effect has passed; one whose interval lies below it cannot
pass: neither needs more seeds. A candidate whose interval straddles the minimum effect gets
more, in steps, up to a cap, and the gate looks again.

The rule keeps the error rate by splitting it over the looks (Bonferroni over a fixed
schedule of looks, Holm across the candidates within each look): each look tests at
``alpha / looks``, so the chance that any look passes a candidate with no real gain is at most
``alpha``, however the seeds were added. It is conservative (a Pocock or O'Brien-Fleming
boundary would spend less of ``alpha`` early) but needs no simulation and holds for the
paired t-test at any sample size. The schedule is fixed before the gate's first look, which
the guarantee needs: its cap is the seeds the budget left then affords (at most the plan's
``max_seeds``), so a budget that can pay for one look does not split ``alpha`` over four.
No temporalio here: unit-tested directly.
"""

from contracts import GateDecision

# Seeds added between looks: two at a time halves the looks (and so the split of alpha)
# against one at a time, for one extra seed at most.
STEP = 2


def looks(first: int, cap: int) -> list[int]:
    """The seeds per arm at each look: ``first``, then ``STEP`` more at a time, ``cap`` last."""
    first = min(first, cap)
    schedule = list(range(first, cap + 1, STEP))
    if schedule[-1] != cap:
        schedule.append(cap)
    return schedule


def schedule(first: int, cap: int, final: bool = False) -> list[int]:
    """The looks of a gate whose seeds per arm the budget caps at ``cap``: the sequential
    ``looks``, or, for the campaign's last gate (``final``), one look at ``cap``. What the last
    gate does not spend is left unspent, so stopping it early saves nothing, and one look
    keeps the whole of ``alpha`` for one test with the most seeds."""
    if final:
        return [max(1, cap)]
    return looks(first, cap)


def look_alpha(alpha: float, looks_: list[int]) -> float:
    """The error rate each look of the schedule ``looks_`` tests at, so that all of them
    together keep ``alpha``."""
    return alpha / len(looks_)


def look_confidence(alpha: float, looks_: list[int]) -> float:
    """The two-sided coverage whose lower bound is the one-sided test at ``look_alpha``."""
    return 1.0 - 2.0 * look_alpha(alpha, looks_)


def undecided(decision: GateDecision, min_effect: float) -> list[str]:
    """Candidates that more seeds could still decide: not passed, their mean gain above the
    minimum effect, and the interval reaching below it (an untested one, with too few seeds,
    too). A mean at or below the minimum effect stops for futility: more seeds would most
    likely confirm it, and stopping for futility never raises the error rate."""
    return [
        c.hypothesis_id
        for c in decision.comparisons
        # A mean above the minimum effect puts the interval's top above it too.
        if not c.passed and (c.gain_high is None or c.gain > min_effect)
    ]


def merged(decisions: list[GateDecision]) -> GateDecision | None:
    """One decision from a gate's looks: each candidate's latest comparison, passed if it
    passed at any look (a pass at a look is final: its error was paid for there)."""
    if not decisions:
        return None
    latest = {c.hypothesis_id: c for d in decisions for c in d.comparisons}
    passed_once = {h for d in decisions for h in d.passed}
    comparisons = [
        c.model_copy(update={"passed": True})
        if c.hypothesis_id in passed_once and not c.passed
        else c
        for c in latest.values()
    ]
    comparisons.sort(key=lambda c: (not c.passed, -c.gain, c.hypothesis_id))
    last = decisions[-1]
    return last.model_copy(
        update={
            "comparisons": comparisons,
            "passed": [c.hypothesis_id for c in comparisons if c.passed],
        }
    )


def by_lower_bound(decisions: list[GateDecision]) -> list[str]:
    """Every candidate that passed a gate, the most certain gain first (the lower end of its
    interval), for the confirmation: a high mean on a wide interval ranks below a slightly
    lower mean known well."""
    passed = {
        c.hypothesis_id: c for d in decisions for c in d.comparisons if c.passed and c.gain_low
    }
    return sorted(passed, key=lambda h: (-(passed[h].gain_low or 0.0), h))
