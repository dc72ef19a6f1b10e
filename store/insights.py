"""Distilling insights: what the recorded gate comparisons say about each change.

Each comparison is one paired estimate of a change's relative gain on one campaign, with its
interval. Estimates of the same change (``contracts.describe``: ``embedding_dim ×2`` is the
same change on any baseline) are pooled with inverse-variance weights, each also weighted by
how similar its task is to the one asked about, so a new campaign leans on what was learned
on tasks like its own.
"""

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import stats

from contracts import (
    Insight,
    InsightQuery,
    Interaction,
    ModelSpec,
    TaskDescriptor,
    describe,
    relative_gain,
)

Z95 = float(stats.norm.ppf(0.975))


@dataclass(frozen=True)
class Evidence:
    """One gate comparison of one change, with what it needs to be pooled."""

    campaign_id: str
    arm: str
    change: str
    family: str
    changes: dict[str, Any]
    task: TaskDescriptor | None
    gain: float
    gain_low: float | None
    gain_high: float | None
    passed: bool
    cost_ratio: float | None

    @property
    def standard_error(self) -> float | None:
        if self.gain_low is None or self.gain_high is None:
            return None
        return max((self.gain_high - self.gain_low) / (2 * Z95), 1e-6)


def pool(gains: np.ndarray, errors: np.ndarray, similarity: np.ndarray) -> tuple[float, float]:
    """The pooled gain and its standard error.

    Weights are ``similarity / se²`` (a precise estimate from a similar task counts most); the
    variance of a weighted mean with fixed weights is ``Σ w² se² / (Σ w)²``.
    """
    weights = similarity / errors**2
    mean = float(np.sum(weights * gains) / np.sum(weights))
    se = float(np.sqrt(np.sum(weights**2 * errors**2)) / np.sum(weights))
    return mean, se


def distil(
    evidence: list[Evidence],
    additivity: list[tuple[str, list[dict[str, Any]], dict[str, Any], ModelSpec]],
    query: InsightQuery,
) -> list[Insight]:
    """One ``Insight`` per change with enough similar evidence, best pooled gain first.

    Args:
        evidence: Every gate comparison (the strongest of each arm: see ``strongest``) and
            what screens measured at full fidelity (``screen_evidence``).
        additivity: Per campaign: its additivity records, arm changes and baseline.
        query: Filters, and the task to weigh similarity against.
    """
    by_change: dict[str, list[tuple[Evidence, float]]] = defaultdict(list)
    for e in evidence:
        similarity = 1.0 if query.task is None or e.task is None else query.task.similarity(e.task)
        if similarity < query.min_similarity:
            continue
        if query.family and query.family not in e.family.split("+"):
            continue
        by_change[e.change].append((e, similarity))
    interactions = _interactions(additivity)
    insights = []
    for change, items in by_change.items():
        if len(items) < query.min_comparisons:
            continue
        gains = np.array([e.gain for e, _ in items])
        weights = np.array([s for _, s in items])
        errors = [e.standard_error for e, _ in items]
        low = high = None
        if all(se is not None for se in errors):
            mean, se = pool(gains, np.array(errors, dtype=float), weights)
            low, high = mean - Z95 * se, mean + Z95 * se
        else:
            mean = float(np.average(gains, weights=weights))
            if len(items) >= 2:  # no per-comparison interval: the spread between them
                se = float(np.std(gains, ddof=1) / np.sqrt(len(items)))
                t = float(stats.t.ppf(0.975, len(items) - 1))
                low, high = mean - t * se, mean + t * se
        costs = [e.cost_ratio for e, _ in items if e.cost_ratio is not None]
        latest = items[-1][0]
        insights.append(
            Insight(
                change=change,
                family=latest.family,
                changes=latest.changes,
                comparisons=len(items),
                campaigns=len({e.campaign_id for e, _ in items}),
                weight=float(weights.sum()),
                mean_gain=mean,
                gain_low=low,
                gain_high=high,
                passed=sum(e.passed for e, _ in items),
                cost_ratio=float(np.mean(costs)) if costs else 1.0,
                interactions=interactions.get(change, []),
            )
        )
    return sorted(insights, key=lambda i: (-i.mean_gain, i.change))


def _interactions(
    additivity: list[tuple[str, list[dict[str, Any]], dict[str, Any], ModelSpec]],
) -> dict[str, list[Interaction]]:
    """For each change, how its merges did against the sum of their parts."""
    excess: dict[tuple[str, str], list[float]] = defaultdict(list)
    for _campaign, records, arm_changes, baseline in additivity:
        for record in records:
            if record.get("gain") is None:
                continue
            parts = [f"v-{p}" for p in record.get("parts", [])]
            if not all(p in arm_changes for p in parts):
                continue
            keys = [describe(baseline, arm_changes[p])[0] for p in parts]
            extra = record["gain"] - record.get("parts_gain", 0.0)
            for key in keys:
                for other in keys:
                    if other != key:
                        excess[(key, other)].append(extra)
    out: dict[str, list[Interaction]] = defaultdict(list)
    for (key, other), values in sorted(excess.items()):
        out[key].append(Interaction(change=other, excess=float(np.mean(values)), n=len(values)))
    return out


# A screened arm's gain is one seed's paired difference; its standard error is about the
# seed noise of one run on the data (0.3-1% of NE on the tasks seen so far): the screen's
# evidence is weak, and is pooled as such.
SCREEN_SE = 0.01


def strongest(decisions: Sequence[Any]) -> list[Any]:
    """Of each campaign's comparisons of an arm, the strongest: its confirmation on the test
    split (fresh seeds, no selection) when it had one, else its validation gates.

    A change that passed validation and lost on the test split is so recorded as the loss it
    was, not as a win (validation gains of a selected arm are biased up: it was chosen for
    them).
    """
    confirmed = {(d.campaign_id, d.arm) for d in decisions if d.split == "test"}
    return [d for d in decisions if d.split == "test" or (d.campaign_id, d.arm) not in confirmed]


def screen_evidence(
    campaign_id: str,
    status: dict[str, Any],
    baseline: ModelSpec,
    task: TaskDescriptor | None,
    gated: set[str],
) -> list[Evidence]:
    """What a multi-fidelity screen measured at full fidelity, as weak evidence: each arm of
    its last full-data rung that no gate weighed, against the baseline's run on the same seed.
    """
    rungs = status.get("rungs") or []
    plan = status.get("plan") or {}
    if not rungs or rungs[-1].get("data_fraction") != 1.0 or rungs[-1].get("baseline") is None:
        return []
    metric, last = status.get("metric", "ne"), rungs[-1]
    changes = {f"v-{h['id']}": h["changes"] for h in plan.get("hypotheses", [])}
    out = []
    for arm, value in last.get("values", {}).items():
        if value is None or arm in gated or arm not in changes:
            continue
        change, family = describe(baseline, changes[arm])
        gain = relative_gain(value, last["baseline"], metric)
        out.append(
            Evidence(
                campaign_id=campaign_id,
                arm=arm,
                change=change,
                family=family,
                changes=changes[arm],
                task=task,
                gain=gain,
                gain_low=gain - Z95 * SCREEN_SE,
                gain_high=gain + Z95 * SCREEN_SE,
                passed=False,
                cost_ratio=None,
            )
        )
    return out
