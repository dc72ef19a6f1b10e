"""The statistical gate: did a hypothesis beat the baseline, by how much, and how sure are we.

Noise is measured, not assumed: the baseline runs with several seeds, each hypothesis is paired
with it seed by seed, and the decision record carries every gain, interval and p-value so the
reasons for a promotion stay in the workflow's history.
"""

from collections import Counter
from typing import Any, Literal

from pydantic import Field, model_validator

from contracts.base import Record, Spec
from contracts.dataset import DatasetRef
from contracts.metrics import Metric
from contracts.model import ModelSpec


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
        split: The split the values were measured on: ``validation`` for selection,
            ``test`` only for the final confirmation.
    """

    metric: Metric = "ne"
    baseline: list[SeededMetric]
    candidates: list[CandidateRuns]
    alpha: float = Field(default=0.05, gt=0.0, lt=1.0)
    min_effect: float = Field(default=0.0, ge=0.0)
    confidence: float = Field(default=0.95, gt=0.0, lt=1.0)
    split: Literal["validation", "test"] = "validation"

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
        split: The split compared (``test`` only for the final confirmation).
        comparisons: One per hypothesis, best gain first; those that could not be tested
            (fewer than two paired seeds, zero variance) come last.
        passed: The ids of the hypotheses that passed, in the order of ``comparisons``.
    """

    metric: Metric
    correction: str
    alpha: float
    min_effect: float
    split: Literal["validation", "test"] = "validation"
    comparisons: list[Comparison] = Field(default_factory=list)
    passed: list[str] = Field(default_factory=list)


class ScreenResult(Record):
    """One hypothesis at the cheap first rung of validation (one seed, fewer epochs).

    Attributes:
        arm: The trial arm screened, e.g. ``v-wider-embeddings``.
        value: Its validation metric at the rung (None when the run failed or diverged).
        gain: Relative gain over the baseline at the same rung and seed (positive is better).
        promoted: Whether successive halving sends it to full fidelity and more seeds.
        reason: Why, in one line.
    """

    arm: str
    value: float | None = None
    gain: float | None = None
    promoted: bool = False
    reason: str = ""


class ScreenDecision(Record):
    """Successive halving's first rung: which hypotheses go on to the seeded gate.

    One seed at reduced fidelity is far too noisy to accept anything, but it is enough to drop
    the clearly worse half cheaply; only the gate on full-fidelity seeded runs accepts.

    Attributes:
        epochs: Epochs of the rung's runs (the full runs train ``ModelSpec.epochs``).
        seed: The seed of the rung's runs; the gate uses other seeds.
        results: One per hypothesis, promoted first, best rung gain first.
        promoted: The arms promoted, in the order of ``results``.
    """

    epochs: int
    seed: int
    results: list[ScreenResult] = Field(default_factory=list)
    promoted: list[str] = Field(default_factory=list)


class Additivity(Record):
    """How a merge of hypotheses did against the sum of its parts.

    Attributes:
        arm: The combination's arm, e.g. ``c-wider-embeddings+lower-dense-lr``.
        parts: The hypotheses merged.
        gain: The merge's paired gain over the baseline (None when it could not be tested).
        parts_gain: The sum of the parts' validated gains.
        ratio: ``gain / parts_gain``: 1 is additive, above 1 synergy, below 1 overlap, below
            0 the merge hurts.
        verdict: ``synergy``, ``additive``, ``overlapping``, ``hurts`` or ``untested``.
    """

    arm: str
    parts: list[str]
    gain: float | None = None
    parts_gain: float = 0.0
    ratio: float | None = None
    verdict: Literal["synergy", "additive", "overlapping", "hurts", "untested"] = "untested"


class ModelRisks(Record):
    """What a change costs to serve and train, against the baseline.

    Attributes:
        parameters: Dense parameters of the candidate (embeddings excluded).
        parameters_ratio: ``parameters`` over the baseline's.
        embedding_bytes: Memory of the candidate's embedding tables.
        embedding_ratio: ``embedding_bytes`` over the baseline's.
        trial_time_ratio: Mean wall time of the candidate's confirmation runs over the
            baseline's (same data, same host); a proxy for step time.
    """

    parameters: int = 0
    parameters_ratio: float = 1.0
    embedding_bytes: int = 0
    embedding_ratio: float = 1.0
    trial_time_ratio: float | None = None


Verdict = Literal["launch", "no launchable improvement"]


class LaunchProposal(Record):
    """The campaign's answer: launch this change, or say honestly that nothing beat noise.

    Attributes:
        verdict: ``launch`` only when the confirmation on the test split, with seeds that
            selection never saw, has an interval that excludes zero and a gain of at least the
            request's minimum effect.
        candidate: The arm proposed (``""`` when nothing passed validation).
        changes: The change as a diff from the baseline spec.
        confirmation: The candidate against the baseline on the test split, fresh seeds.
        evidence: The gate decision of each phase that ran one, by phase.
        screen: The first rung of validation.
        additivity: One record per merge tried in combination.
        device_hours: Spent per phase, as the ledger counts it.
        risks: What the change costs against the baseline.
        headline: One line that says only what the verdict supports.
        learned: What the campaign learned, one line each, also when nothing launches.
        explored: What the campaign looked at and where its compute went, one line each
            (multi-fidelity campaigns).
        ended_by: The rule that ended the campaign and what it left unspent.
        unspent_device_hours: Approved device-hours not spent.
    """

    verdict: Verdict
    candidate: str = ""
    changes: dict[str, Any] = Field(default_factory=dict)
    confirmation: Comparison | None = None
    evidence: dict[str, GateDecision] = Field(default_factory=dict)
    screen: ScreenDecision | None = None
    additivity: list[Additivity] = Field(default_factory=list)
    device_hours: dict[str, float] = Field(default_factory=dict)
    risks: ModelRisks | None = None
    headline: str = ""
    learned: list[str] = Field(default_factory=list)
    explored: list[str] = Field(default_factory=list)
    ended_by: str = ""
    unspent_device_hours: float = 0.0


class FootprintInput(Spec):
    """Models whose size to measure against the baseline's, on the campaign's dataset."""

    baseline: ModelSpec
    candidate: ModelSpec
    dataset: DatasetRef


def screen_epochs(epochs: int) -> int:
    """Epochs of validation's cheap first rung for a model that trains ``epochs``: half,
    at least one (a one-epoch model is screened at full fidelity, on one seed)."""
    return max(1, epochs // 2)
