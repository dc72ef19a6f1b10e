"""The offline research agent: techniques from a catalog, ranked by what history says.

The catalog (``knowledge/``: its schema, loader and ``techniques.yaml``) keeps ranking-model
techniques as data: each is a small program of changes relative to the baseline, when it
applies, a modest prior on its relative NE gain, its cost and a citation. ``KnowledgeAgent``
instantiates the applicable ones on a campaign's baseline, moves each prior toward what similar
past campaigns observed (``priors.py``: a normal-normal update, so thin evidence moves it
little), adds cross-family combinations and the past winners no technique covers, and ranks
them by expected gain per cost.

A plain library: no Temporal here; the planning activity calls it.
"""

import math
import re
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from activities.agents.priors import evidence_text, pct, posterior
from contracts.actions import DEFAULT_ACTION_SPACE
from contracts.campaign import CampaignRequest, Hypothesis, canonical
from contracts.insights import Insight, Proposals, describe
from contracts.model import ModelSpec
from contracts.provenance import Provenance
from contracts.task import TaskDescriptor
from knowledge import Prior, Technique, applies, changes_for, load_catalog

AGENT = "knowledge-catalog/1"
# Combined changes overlap (two capacity increases partly buy the same thing), so a pair is
# expected to deliver less than the sum of its parts unless past merges said otherwise.
OVERLAP_DISCOUNT = 0.8
# A past winner with no technique behind it starts from "no effect", this unsure.
INSIGHT_PRIOR_SD = 0.005
# In the first ``max_hypotheses``, at most this many per family, so that one family's
# variations do not crowd out the others (the planner re-ranks with its own penalty).
MAX_PER_FAMILY = 2
# Hypothesis ids; the catalog keeps technique ids short enough for ``combo-<a>+<b>``.
MAX_ID_LENGTH = 48
# The kinds whose best members are paired, anchor first: gains engineers tend to leave on the
# table by tuning one family at a time.
COMBINED_KINDS: tuple[tuple[str, str], ...] = (
    ("architecture", "training-efficiency"),
    ("architecture", "optimization"),
)

CostFactor = Callable[[ModelSpec], float]


@dataclass(frozen=True)
class _Candidate:
    """A ranked move with what combinations need to know about it."""

    hypothesis: Hypothesis
    kind: str = ""  # the technique's kind; empty for combinations and past winners
    technique: Technique | None = None
    parts: tuple[str, ...] = ()  # a combination's parts, anchor first

    @property
    def score(self) -> float:
        return self.hypothesis.expected_gain / self.hypothesis.cost_factor

    @property
    def key(self) -> tuple[float, str]:
        return (-self.score, self.hypothesis.id)


class KnowledgeAgent:
    """Proposes catalog techniques on a baseline, ranked by posterior gain per cost.

    Args:
        catalog: The techniques; default the packaged catalog.
    """

    def __init__(self, catalog: list[Technique] | None = None) -> None:
        self.catalog = catalog if catalog is not None else load_catalog()

    def propose(
        self,
        request: CampaignRequest,
        task: TaskDescriptor | None,
        insights: list[Insight],
        max_hypotheses: int,
        cost_factor: CostFactor | None = None,
    ) -> Proposals:
        """Hypotheses for ``request.baseline``, best first.

        Args:
            request: The campaign (its baseline is what the techniques change).
            task: The task, for techniques that depend on the data's shape (None: unknown).
            insights: What similar past campaigns observed, similarity-weighted.
            max_hypotheses: At most this many hypotheses.
            cost_factor: A candidate spec's cost relative to the baseline's (the planner's
                analytic FLOP ratio); default the catalog's cost of each technique.

        Returns:
            ``Proposals`` from source ``knowledge``: technique instances, cross-family
            combinations and past winners (source ``insights``), each with provenance, the
            posterior expected gain and the cost factor; what was refused, and why.
        """
        baseline = request.baseline
        by_change = _insights_by_change(insights)
        rejected: list[str] = []

        def cost(changes: dict[str, Any], fallback: float) -> float:
            if cost_factor is None:
                return fallback
            value = cost_factor(baseline.with_changes(changes))
            # A broken cost model must not zero out or invert a ranking: fall back.
            return value if math.isfinite(value) and value > 0 else fallback

        singles: list[_Candidate] = []
        for technique in self.catalog:
            if not applies(technique, baseline, task):
                continue
            changes, why = changes_for(technique, baseline)
            if changes is None:
                rejected.append(f"{technique.id}: {why}")
                continue
            singles.append(
                self._single(technique, baseline, changes, by_change, cost(changes, technique.cost))
            )
        singles = _dedupe(sorted(singles, key=lambda c: c.key), rejected)
        combos = _combinations(baseline, singles, by_change, cost, rejected)
        covered = {describe(baseline, c.hypothesis.changes)[0] for c in singles}
        winners = _past_winners(baseline, insights, covered, cost, rejected)
        pool = _dedupe(sorted([*singles, *combos, *winners], key=lambda c: c.key), rejected)
        chosen = _select(pool, max_hypotheses)
        shaped = sum(1 for c in singles if describe(baseline, c.hypothesis.changes)[0] in by_change)
        note = (
            f"knowledge catalog: {len(singles)} of {len(self.catalog)} techniques apply to this "
            f"baseline; {shaped} shaped by past evidence; {len(combos)} combination(s); "
            f"{len(winners)} past winner(s) outside the catalog"
        )
        return Proposals(
            source="knowledge",
            hypotheses=[c.hypothesis for c in chosen],
            rejected=rejected,
            note=note,
            task=task,
            insights=insights,
        )

    @staticmethod
    def _single(
        technique: Technique,
        baseline: ModelSpec,
        changes: dict[str, Any],
        by_change: dict[str, Insight],
        cost_factor: float,
    ) -> _Candidate:
        change, family = describe(baseline, changes)
        insight = by_change.get(change)
        post = posterior(technique.prior, insight)
        title = technique.title.format(old=baseline, new=baseline.with_changes(changes))
        return _Candidate(
            Hypothesis(
                id=technique.id,
                title=title,
                rationale=technique.rationale,
                source="knowledge",
                changes=changes,
                provenance=Provenance(
                    source="knowledge",
                    agent=AGENT,
                    technique=technique.id,
                    citation=technique.citation,
                    evidence=evidence_text(technique.prior, insight, post),
                ),
                expected_gain=post.gain,
                cost_factor=cost_factor,
                family=family,
            ),
            kind=technique.kind,
            technique=technique,
        )


def _insights_by_change(insights: Iterable[Insight]) -> dict[str, Insight]:
    """The best-evidenced insight per change (the store returns one per change anyway)."""
    out: dict[str, Insight] = {}
    for insight in insights:
        held = out.get(insight.change)
        if held is None or insight.weight > held.weight:
            out[insight.change] = insight
    return out


def _dedupe(candidates: list[_Candidate], rejected: list[str]) -> list[_Candidate]:
    """The first (best-ranked) candidate of each move and of each id."""
    seen: dict[str, str] = {}
    ids: set[str] = set()
    out = []
    for c in candidates:
        key = canonical(c.hypothesis.changes)
        if key in seen:
            rejected.append(f"{c.hypothesis.id}: duplicate of {seen[key]}")
            continue
        if c.hypothesis.id in ids:
            rejected.append(f"{c.hypothesis.id}: duplicate id")
            continue
        seen[key] = c.hypothesis.id
        ids.add(c.hypothesis.id)
        out.append(c)
    return out


def _combinations(
    baseline: ModelSpec,
    ranked: list[_Candidate],
    by_change: dict[str, Insight],
    cost: Callable[[dict[str, Any], float], float],
    rejected: list[str],
) -> list[_Candidate]:
    """For each pair of kinds, the best anchor (positive expected gain) stacked with the best
    partner of the other kind that does not conflict with it.

    A conflicting partner (same field, or an exclusive choice such as two interactions) is
    skipped for the next one, and the skip is recorded.
    """
    out: list[_Candidate] = []
    for first, second in COMBINED_KINDS:
        anchor = next(
            (c for c in ranked if c.kind == first and c.hypothesis.expected_gain > 0), None
        )
        if anchor is None:
            continue
        for partner in (c for c in ranked if c.kind == second):
            a, b = anchor.hypothesis, partner.hypothesis
            if reasons := DEFAULT_ACTION_SPACE.conflicts(a.changes, b.changes):
                rejected.append(f"combo-{a.id}+{b.id}: conflicts ({'; '.join(reasons)})")
                continue
            combo = _combine(baseline, anchor, partner, by_change, cost)
            if combo is None:
                rejected.append(f"combo-{a.id}+{b.id}: the merged spec cannot be built")
                continue
            out.append(combo)
            break
    return out


def _combine(
    baseline: ModelSpec,
    anchor: _Candidate,
    partner: _Candidate,
    by_change: dict[str, Insight],
    cost: Callable[[dict[str, Any], float], float],
) -> _Candidate | None:
    a, b = anchor.hypothesis, partner.hypothesis
    changes = {**a.changes, **b.changes}
    try:
        DEFAULT_ACTION_SPACE.check(changes)
        baseline.with_changes(changes)
    except ValueError:  # pydantic's ValidationError is a ValueError
        return None
    key_a, key_b = describe(baseline, a.changes)[0], describe(baseline, b.changes)[0]
    parts = a.expected_gain + b.expected_gain
    excess = _observed_excess(by_change, key_a, key_b)
    if excess is None:
        gain = parts * OVERLAP_DISCOUNT
        how = f"sum of parts {pct(parts)} x {OVERLAP_DISCOUNT:g} (overlap discount)"
    else:
        gain = parts + excess[0]
        how = f"sum of parts {pct(parts)} {pct(excess[0])} as {excess[1]} past merge(s) showed"
    assert anchor.technique is not None and partner.technique is not None
    change, family = describe(baseline, changes)
    return _Candidate(
        Hypothesis(
            id=f"combo-{a.id}+{b.id}"[:MAX_ID_LENGTH],
            title=f"{a.title} + {b.title}",
            rationale=(
                f"Stacks a {anchor.kind} change with a {partner.kind} one, which are rarely "
                f"tuned together: {anchor.technique.rationale} / {partner.technique.rationale}"
            ),
            source="knowledge",
            changes=changes,
            provenance=Provenance(
                source="knowledge",
                agent=AGENT,
                technique=f"{a.id}+{b.id}",
                citation="; ".join(
                    c for c in (anchor.technique.citation, partner.technique.citation) if c
                ),
                evidence=f"{how}; {change}",
            ),
            expected_gain=max(min(gain, 0.1), -0.1),
            cost_factor=cost(changes, a.cost_factor * b.cost_factor),
            family=family,
        ),
        parts=(a.id, b.id),
    )


def _observed_excess(
    by_change: dict[str, Insight], key_a: str, key_b: str
) -> tuple[float, int] | None:
    """Mean excess (merged gain minus the parts') of past merges of the two, and their count."""
    found = [
        (i.excess, i.n)
        for mine, other in ((key_a, key_b), (key_b, key_a))
        if (insight := by_change.get(mine)) is not None
        for i in insight.interactions
        if i.change == other and i.n > 0
    ]
    if not found:
        return None
    # Both directions record the same merges (the store writes one per part): average them.
    n = max(count for _, count in found)
    return sum(e * c for e, c in found) / sum(c for _, c in found), n


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def _past_winners(
    baseline: ModelSpec,
    insights: list[Insight],
    covered: set[str],
    cost: Callable[[dict[str, Any], float], float],
    rejected: list[str],
) -> list[_Candidate]:
    """Changes that won on similar tasks (a passed gate, or an interval above zero) that no
    technique instance covers, re-validated on this baseline.

    An insight's ``changes`` are one concrete instance (absolute values); on this baseline
    they may mean another change (``embedding_dim: 32`` is ×2 from 16 but ÷2 from 64), so one
    whose change no longer reads the same is refused rather than credited with evidence
    about something else.
    """
    out: list[_Candidate] = []
    ids: set[str] = set()
    for insight in insights:
        won = insight.passed >= 1 or (insight.gain_low is not None and insight.gain_low > 0)
        if not won or insight.change in covered:
            continue
        changes = {f: v for f, v in insight.changes.items() if getattr(baseline, f, None) != v}
        label = f"insight {insight.change!r}"
        try:
            DEFAULT_ACTION_SPACE.check(changes)
            baseline.with_changes(changes)
        except ValueError as err:
            rejected.append(f"{label}: not a valid move on this baseline: {err}")
            continue
        change, family = describe(baseline, changes)
        if change != insight.change:
            rejected.append(f"{label}: means {change!r} on this baseline")
            continue
        prior = Prior(gain=0.0, sd=INSIGHT_PRIOR_SD)
        post = posterior(prior, insight)
        hid, n = f"insight-{_slug(insight.change)}"[:MAX_ID_LENGTH], 2
        while hid in ids:
            suffix = f"-{n}"
            hid = f"insight-{_slug(insight.change)}"[: MAX_ID_LENGTH - len(suffix)] + suffix
            n += 1
        ids.add(hid)
        out.append(
            _Candidate(
                Hypothesis(
                    id=hid,
                    title=f"{insight.change} (won on similar tasks)",
                    rationale=(
                        f"Passed {insight.passed} of {insight.comparisons} past comparison(s) "
                        f"in {insight.campaigns} campaign(s) on similar tasks; no catalog "
                        "technique covers it."
                    ),
                    source="insights",
                    changes=changes,
                    provenance=Provenance(
                        source="insights",
                        agent=AGENT,
                        evidence=evidence_text(prior, insight, post),
                    ),
                    expected_gain=post.gain,
                    cost_factor=cost(
                        changes, insight.cost_ratio if insight.cost_ratio > 0 else 1.0
                    ),
                    family=family,
                )
            )
        )
    return out


def _select(ranked: list[_Candidate], n: int) -> list[_Candidate]:
    """The first ``n`` of ``ranked`` under diversity rules, best first.

    First the best single move of each source (a source's ideas are only learned from if
    some of them run); then, in rank order, candidates whose families each hold fewer than
    ``MAX_PER_FAMILY`` places, a combination only once its anchor is in (a merge whose main
    part was never tested alone cannot be attributed); then the rest in rank order.
    """
    chosen: list[_Candidate] = []
    ids: set[str] = set()
    counts: Counter[str] = Counter()

    def take(c: _Candidate) -> None:
        chosen.append(c)
        ids.add(c.hypothesis.id)
        counts.update(c.hypothesis.families)

    sources: set[str] = set()
    for c in ranked:
        if not c.parts and c.hypothesis.source not in sources and len(chosen) < n:
            take(c)
            sources.add(c.hypothesis.source)

    def eligible(c: _Candidate) -> bool:
        if c.hypothesis.id in ids or (c.parts and c.parts[0] not in ids):
            return False
        return all(counts[f] < MAX_PER_FAMILY for f in c.hypothesis.families)

    # Rescan from the top after each pick: taking an anchor makes its combinations eligible.
    while len(chosen) < n and (pick := next((c for c in ranked if eligible(c)), None)):
        take(pick)
    for c in ranked:
        if len(chosen) >= n:
            break
        if c.hypothesis.id not in ids:
            take(c)
    return sorted(chosen, key=lambda c: c.key)
