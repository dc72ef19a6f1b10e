"""The statistical gate: paired, seed-by-seed comparisons of hypotheses with the baseline.

The statistics run here, in an activity, so the workflow only reads a typed decision record
and stays deterministic; the numbers behind every promotion are then in its history.
"""

import math

import numpy as np
from scipy import special
from temporalio import activity
from temporalio.exceptions import ApplicationError

from contracts import best_first
from contracts.evidence import (
    Comparison,
    FootprintInput,
    GateDecision,
    GateInput,
    ModelRisks,
    SeededMetric,
)
from ranking_models.errors import TrainingError

# Holm-Bonferroni controls the family-wise error rate (the chance that ANY hypothesis with no
# real gain passes) without assuming the tests are independent, which they are not here: every
# hypothesis is compared with the same baseline runs. It is uniformly more powerful than plain
# Bonferroni at the same guarantee. Benjamini-Hochberg would control the false discovery rate
# instead, which tolerates some false passes; a launch decision should not rest on one.
CORRECTION = "Holm-Bonferroni"
_CORRECTION_SHORT = "Holm"


def holm(p_values: list[float]) -> list[float]:
    """Holm step-down adjusted p-values, in the order given.

    The i-th smallest p-value (from 0) is multiplied by ``m - i``; a running maximum keeps the
    adjusted values in the same order as the raw ones, and they are capped at 1.
    """
    m = len(p_values)
    adjusted = [1.0] * m
    running = 0.0
    for rank, index in enumerate(sorted(range(m), key=lambda i: p_values[i])):
        running = max(running, min(1.0, (m - rank) * p_values[index]))
        adjusted[index] = running
    return adjusted


def _pct(x: float) -> str:
    return f"{x * 100:+.2f}%"


def _paired(
    baseline: dict[int, float], runs: list[SeededMetric]
) -> tuple[list[int], np.ndarray, np.ndarray]:
    by_seed = {run.seed: run.value for run in runs}
    seeds = sorted(set(baseline) & set(by_seed))
    base = np.array([baseline[s] for s in seeds], dtype=float)
    cand = np.array([by_seed[s] for s in seeds], dtype=float)
    return seeds, base, cand


def _test(
    hypothesis_id: str, inp: GateInput, baseline: dict[int, float], runs: list[SeededMetric]
) -> tuple[Comparison, bool]:
    """The raw comparison of one hypothesis (no correction yet), or why it cannot be tested.

    Returns:
        The comparison, and whether a t-test ran (only those enter the corrected family; an
        untested comparison already holds its reason and is never passed).
    """
    sign = best_first(inp.metric)
    seeds, base, cand = _paired(baseline, runs)
    n = len(seeds)
    paired = Comparison(
        hypothesis_id=hypothesis_id,
        seeds=seeds,
        n=n,
        baseline_mean=float(base.mean()) if n else 0.0,
        candidate_mean=float(cand.mean()) if n else 0.0,
    )
    if n < 2:
        needs = f"only {n} paired seed{'' if n == 1 else 's'}: needs 2"
        return paired.model_copy(update={"reason": needs}), False
    if paired.baseline_mean == 0.0:
        undefined = "baseline mean is 0: a relative gain is undefined"
        return paired.model_copy(update={"reason": undefined}), False
    scale = abs(paired.baseline_mean)
    # Oriented so that positive is better: baseline - candidate for a loss, the reverse for AUC.
    diffs = sign * (base - cand)
    mean = float(diffs.mean())
    sd = float(diffs.std(ddof=1))
    if sd == 0.0:
        # Every seed moved by exactly the same amount (often: not at all). The seed noise was
        # not measured, so there is no evidence either way; scipy would answer NaN or p=0.
        flat = (
            f"gain {_pct(mean / scale)} identical on all {n} seeds: "
            "zero variance, the noise is not measured, no evidence"
        )
        update = {"gain": mean / scale, "gain_low": mean / scale, "gain_high": mean / scale}
        return paired.model_copy(update=update | {"reason": flat}), False
    # The one-sided paired t-test (H1: mean difference > 0), the same numbers as
    # ``scipy.stats.ttest_rel(..., alternative="greater")`` (the tests check it), but through
    # the Student t ufuncs: ~50x cheaper per call, which the false-pass simulations need.
    se = sd / math.sqrt(n)
    p_value = float(special.stdtr(n - 1, -mean / se))
    half = float(special.stdtrit(n - 1, 0.5 + inp.confidence / 2)) * se
    tested = {
        "gain": mean / scale,
        "gain_low": (mean - half) / scale,
        "gain_high": (mean + half) / scale,
        "p_value": p_value,
    }
    return paired.model_copy(update=tested), True


def _decide(comparison: Comparison, p_adjusted: float, inp: GateInput) -> Comparison:
    """Applies the pass rule to a tested comparison and writes its reason."""
    low, high = comparison.gain_low, comparison.gain_high
    assert low is not None and high is not None  # a tested comparison has an interval
    significant = p_adjusted < inp.alpha
    large_enough = comparison.gain >= inp.min_effect
    above_zero = low > 0.0
    passed = significant and large_enough and above_zero
    head = (
        f"gain {_pct(comparison.gain)} [{_pct(low)}, {_pct(high)}], "
        f"{_CORRECTION_SHORT}-adjusted p={p_adjusted:.3g} "
        f"{'<' if significant else '>='} {inp.alpha:g}"
    )
    minimum = f"the {inp.min_effect * 100:.2f}% minimum"
    if passed:
        reason = f"{head}, above {minimum}"
    else:
        why = []
        if not significant:
            why.append("not significant")
        if not large_enough:
            why.append(f"below {minimum}")
        if significant and not above_zero:
            why.append("interval reaches 0")
        reason = f"{head}: {', '.join(why)}"
    return comparison.model_copy(
        update={"p_adjusted": p_adjusted, "passed": passed, "reason": reason}
    )


def gate(inp: GateInput) -> GateDecision:
    """Decide which hypotheses beat the baseline.

    Each hypothesis is paired with the baseline by seed (only seeds both ran); the paired
    differences, oriented so that positive is better, get a one-sided paired t-test and a
    t-based confidence interval, both relative to the baseline's mean. The p-values of the
    hypotheses actually tested (at least two paired seeds, some seed-to-seed variation) are
    corrected together (Holm-Bonferroni). A
    hypothesis passes when its adjusted p-value is below ``alpha``, its gain is at least
    ``min_effect`` and its interval lies above zero.

    Args:
        inp: The baseline's and the hypotheses' seeded runs and the thresholds.

    Returns:
        The decision: every comparison, best gain first, and the ids that passed.
    """
    baseline = {run.seed: run.value for run in inp.baseline}
    tested: list[Comparison] = []
    untested: list[Comparison] = []
    for candidate in inp.candidates:
        comparison, in_family = _test(candidate.hypothesis_id, inp, baseline, candidate.runs)
        (tested if in_family else untested).append(comparison)
    adjusted = holm([c.p_value for c in tested])
    decided = [_decide(c, p, inp) for c, p in zip(tested, adjusted, strict=True)]
    decided.sort(key=lambda c: (-c.gain, c.hypothesis_id))
    comparisons = decided + sorted(untested, key=lambda c: c.hypothesis_id)
    return GateDecision(
        metric=inp.metric,
        correction=CORRECTION,
        alpha=inp.alpha,
        min_effect=inp.min_effect,
        split=inp.split,
        comparisons=comparisons,
        passed=[c.hypothesis_id for c in comparisons if c.passed],
    )


def footprint(inp: FootprintInput) -> ModelRisks:
    """The candidate's dense parameters and embedding memory against the baseline's.

    Counted from the specs and the data's schema (nothing is built or trained).

    Raises:
        ApplicationError: non-retryable, typed by the trainer's error, when the data cannot
            be read (``BadDataError``).
    """
    from ranking_models import memory
    from ranking_models.datasets import load_dataset

    rows = max(inp.baseline.max_table_rows, inp.candidate.max_table_rows)
    try:
        schema = load_dataset(inp.dataset, max_table_rows=rows).schema
    except TrainingError as err:
        raise ApplicationError(str(err), type=type(err).__name__, non_retryable=True) from err
    base_params = memory.dense_parameter_count(inp.baseline, schema)
    params = memory.dense_parameter_count(inp.candidate, schema)
    base_bytes = memory.embedding_bytes(inp.baseline, schema)
    emb_bytes = memory.embedding_bytes(inp.candidate, schema)
    return ModelRisks(
        parameters=params,
        parameters_ratio=params / base_params if base_params else 1.0,
        embedding_bytes=emb_bytes,
        embedding_ratio=emb_bytes / base_bytes if base_bytes else 1.0,
    )


class EvidenceActivities:
    """The statistical gate and the launch proposal's risk figures, as activities."""

    @activity.defn(name="gate_hypotheses")
    def gate_hypotheses(self, inp: GateInput) -> GateDecision:
        """Decide which hypotheses beat the baseline (see ``gate``)."""
        return gate(inp)

    @activity.defn(name="model_footprint")
    def model_footprint(self, inp: FootprintInput) -> ModelRisks:
        """Dense parameters and embedding memory of a candidate vs the baseline."""
        return footprint(inp)
