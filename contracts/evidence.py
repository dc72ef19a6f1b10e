"""The statistical gate: did a hypothesis beat the baseline, by how much, and how sure are we.

Noise is measured, not assumed: the baseline runs with several seeds, each hypothesis is paired
with it seed by seed, and the decision record carries every gain, interval and p-value so the
reasons for a promotion stay in the workflow's history.
"""

from collections import Counter

from pydantic import Field, model_validator

from contracts.base import Record, Spec
from contracts.model import Metric


class SeededMetric(Record):
    """One run's value of the campaign metric.

    Attributes:
        seed: The seed the run trained with; the same seed means the same initialisation and
            data order, so runs with equal seeds are paired (common random numbers).
        value: The metric on the validation split.
    """

    seed: int
    value: float


def _duplicate_seeds(runs: list[SeededMetric]) -> list[int]:
    counts = Counter(run.seed for run in runs)
    return sorted(seed for seed, count in counts.items() if count > 1)


class CandidateRuns(Spec):
    """The runs of one hypothesis, one per seed.

    Attributes:
        hypothesis_id: The hypothesis these runs test.
        runs: One value per seed; a seed may appear only once.
    """

    hypothesis_id: str = Field(min_length=1)
    runs: list[SeededMetric]

    @model_validator(mode="after")
    def _one_run_per_seed(self) -> "CandidateRuns":
        if duplicates := _duplicate_seeds(self.runs):
            raise ValueError(f"runs: seeds {duplicates} appear more than once")
        return self


class GateInput(Spec):
    """What the gate compares: a seeded baseline and the seeded runs of each hypothesis.

    Attributes:
        metric: The campaign metric; its direction comes from ``LOWER_IS_BETTER``.
        baseline: The baseline's runs, one per seed.
        candidates: The hypotheses tested together; they form one family for the correction.
        alpha: The family-wise error rate: the chance that any hypothesis with no real gain
            passes.
        min_effect: The smallest relative gain worth promoting, e.g. 0.001 for 0.1%.
        confidence: The coverage of the reported confidence intervals (two-sided).
    """

    metric: Metric = "ne"
    baseline: list[SeededMetric]
    candidates: list[CandidateRuns]
    alpha: float = Field(default=0.05, gt=0.0, lt=1.0)
    min_effect: float = Field(default=0.0, ge=0.0)
    confidence: float = Field(default=0.95, gt=0.0, lt=1.0)

    @model_validator(mode="after")
    def _unique_seeds_and_ids(self) -> "GateInput":
        if duplicates := _duplicate_seeds(self.baseline):
            raise ValueError(f"baseline: seeds {duplicates} appear more than once")
        ids = [candidate.hypothesis_id for candidate in self.candidates]
        if len(set(ids)) != len(ids):
            raise ValueError(f"candidates: hypothesis ids are not unique: {ids}")
        return self


class Comparison(Record):
    """One hypothesis against the baseline, paired by seed.

    Gains are relative and oriented so that positive is better in the metric's direction
    (a lower NE, a higher AUC).

    Attributes:
        hypothesis_id: The hypothesis compared.
        seeds: The seeds present in both the baseline and the hypothesis, in order.
        n: The number of paired seeds.
        baseline_mean: The baseline's mean over the paired seeds.
        candidate_mean: The hypothesis' mean over the paired seeds.
        gain: The mean paired difference divided by ``|baseline_mean|``.
        gain_low: The lower end of the confidence interval of ``gain`` (None when fewer
            than two seeds are paired: there is no interval).
        gain_high: The upper end of that interval.
        p_value: The raw one-sided p-value of the paired t-test (H1: the hypothesis is better).
        p_adjusted: ``p_value`` after the correction for the number of hypotheses tested.
        passed: Significant after correction, at least ``min_effect``, interval above zero.
        reason: One line a person reads: the numbers and what decided.
    """

    hypothesis_id: str
    seeds: list[int] = Field(default_factory=list)
    n: int = 0
    baseline_mean: float = 0.0
    candidate_mean: float = 0.0
    gain: float = 0.0
    gain_low: float | None = None
    gain_high: float | None = None
    p_value: float = 1.0
    p_adjusted: float = 1.0
    passed: bool = False
    reason: str = ""


class GateDecision(Record):
    """The gate's decision on a family of hypotheses.

    Attributes:
        metric: The metric compared.
        correction: The multiple-comparison correction applied to the p-values.
        alpha: The family-wise error rate used.
        min_effect: The minimum relative gain used.
        comparisons: One per hypothesis, best gain first; those that could not be tested
            (fewer than two paired seeds, zero variance) come last.
        passed: The ids of the hypotheses that passed, in the order of ``comparisons``.
    """

    metric: Metric
    correction: str
    alpha: float
    min_effect: float
    comparisons: list[Comparison] = Field(default_factory=list)
    passed: list[str] = Field(default_factory=list)
