"""The statistical gate on simulated seed noise: planted effects pass, null effects do not.

Runs are simulated as ``mean + seed effect + run noise``: the seed effect is shared by every
arm trained with that seed (same initialisation, same data order), which is what pairing by
seed cancels.
"""

from typing import Any

import numpy as np
import pytest
from pydantic import ValidationError
from scipy import stats
from temporalio.testing import ActivityEnvironment

from activities.evidence import CORRECTION, EvidenceActivities, gate, holm
from contracts import CandidateRuns, GateDecision, GateInput, SeededMetric

BASE_NE = 0.92


def runs(values: np.ndarray, seeds: list[int] | None = None) -> list[SeededMetric]:
    seeds = list(range(len(values))) if seeds is None else seeds
    return [SeededMetric(seed=s, value=float(v)) for s, v in zip(seeds, values, strict=True)]


def simulate(
    rng: np.random.Generator,
    shifts: list[float],
    seeds: int = 5,
    seed_sd: float = 0.003,
    noise_sd: float = 0.0005,
) -> tuple[np.ndarray, list[np.ndarray]]:
    """A baseline and one candidate per shift (added to NE: negative is better)."""
    seed_effect = rng.normal(0.0, seed_sd, seeds)
    baseline = BASE_NE + seed_effect + rng.normal(0.0, noise_sd, seeds)
    candidates = [
        BASE_NE + shift + seed_effect + rng.normal(0.0, noise_sd, seeds) for shift in shifts
    ]
    return baseline, candidates


def gate_input(baseline: np.ndarray, candidates: list[np.ndarray], **kwargs: Any) -> GateInput:
    return GateInput(
        baseline=runs(baseline),
        candidates=[
            CandidateRuns(hypothesis_id=f"h{i}", runs=runs(values))
            for i, values in enumerate(candidates)
        ],
        **kwargs,
    )


def test_a_planted_gain_passes_and_its_interval_covers_it() -> None:
    baseline, [candidate] = simulate(np.random.default_rng(0), [-0.004])
    decision = gate(gate_input(baseline, [candidate], min_effect=0.001))
    [comparison] = decision.comparisons
    planted = 0.004 / BASE_NE
    assert decision.passed == ["h0"]
    assert comparison.gain_low is not None and comparison.gain_high is not None
    assert comparison.gain_low < planted < comparison.gain_high
    assert comparison.gain_low > 0.0
    assert comparison.p_adjusted < 0.05
    assert comparison.seeds == [0, 1, 2, 3, 4]
    assert "Holm-adjusted" in comparison.reason and "above the 0.10% minimum" in comparison.reason
    assert decision.correction == CORRECTION
    paired = stats.ttest_rel(baseline, candidate, alternative="greater")
    assert comparison.p_value == pytest.approx(paired.pvalue, rel=1e-9)
    interval = stats.ttest_rel(candidate, baseline).confidence_interval(0.95)
    assert comparison.gain_low == pytest.approx(-interval.high / baseline.mean(), rel=1e-9)


def test_the_planted_gain_is_found_almost_always_among_null_hypotheses() -> None:
    rng = np.random.default_rng(1)
    found = 0
    for _ in range(200):
        baseline, candidates = simulate(rng, [-0.004, 0.0, 0.0, 0.0, 0.0, 0.0])
        found += "h0" in gate(gate_input(baseline, candidates)).passed
    assert found / 200 >= 0.95


def test_null_hypotheses_pass_at_most_alpha_of_the_time_only_with_the_correction() -> None:
    # 4000 campaigns of 6 hypotheses with no real effect. The family-wise false-pass rate must
    # stay at alpha (plus ~3 Monte-Carlo standard errors, sqrt(0.05 * 0.95 / 4000) = 0.0034);
    # testing each at alpha without the correction passes some null hypothesis about 20% of
    # the time here, so this test fails if the correction is removed.
    rng = np.random.default_rng(2)
    campaigns, alpha = 4000, 0.05
    corrected = uncorrected = 0
    for _ in range(campaigns):
        baseline, candidates = simulate(rng, [0.0] * 6)
        decision = gate(gate_input(baseline, candidates, alpha=alpha))
        corrected += bool(decision.passed)
        uncorrected += any(c.p_value < alpha for c in decision.comparisons)
    assert corrected / campaigns <= alpha + 0.01
    assert uncorrected / campaigns >= 3 * alpha


def test_pairing_by_seed_finds_a_gain_that_an_unpaired_comparison_misses() -> None:
    # The seed effect (sd 1%) dwarfs the gain (0.2%): only pairing cancels it.
    baseline, [candidate] = simulate(np.random.default_rng(3), [-0.002], seed_sd=0.01)
    decision = gate(gate_input(baseline, [candidate]))
    unpaired = stats.ttest_ind(baseline, candidate, equal_var=False, alternative="greater")
    assert decision.passed == ["h0"]
    assert unpaired.pvalue > 0.05


def test_a_significant_gain_below_the_minimum_effect_is_dropped() -> None:
    # 0.02% gain, measured very precisely, against a 0.1% minimum.
    baseline, [candidate] = simulate(np.random.default_rng(4), [-0.0002], noise_sd=0.00002)
    [comparison] = gate(gate_input(baseline, [candidate], min_effect=0.001)).comparisons
    assert comparison.p_adjusted < 0.05
    assert not comparison.passed
    assert "below the 0.10% minimum" in comparison.reason


def test_a_worse_candidate_is_dropped() -> None:
    baseline, [worse] = simulate(np.random.default_rng(5), [+0.004])
    [comparison] = gate(gate_input(baseline, [worse])).comparisons
    assert comparison.gain < 0.0
    assert comparison.p_value > 0.5
    assert not comparison.passed
    assert "not significant" in comparison.reason


def test_auc_is_higher_is_better() -> None:
    rng = np.random.default_rng(6)
    seed_effect = rng.normal(0.0, 0.002, 5)
    baseline = 0.78 + seed_effect + rng.normal(0.0, 0.0003, 5)
    better = 0.78 + 0.003 + seed_effect + rng.normal(0.0, 0.0003, 5)
    worse = 0.78 - 0.003 + seed_effect + rng.normal(0.0, 0.0003, 5)
    decision = gate(gate_input(baseline, [better, worse], metric="auc"))
    assert decision.passed == ["h0"]
    assert [c.hypothesis_id for c in decision.comparisons] == ["h0", "h1"]  # best gain first
    assert decision.comparisons[0].gain == pytest.approx(
        float((better - baseline).mean() / baseline.mean())
    )


def test_fewer_than_two_paired_seeds_is_not_tested() -> None:
    inp = GateInput(
        baseline=runs(np.array([0.92, 0.921, 0.919])),
        candidates=[CandidateRuns(hypothesis_id="h", runs=runs(np.array([0.5, 0.5]), [2, 7]))],
    )
    [comparison] = gate(inp).comparisons
    assert comparison.seeds == [2]
    assert not comparison.passed
    assert comparison.reason == "only 1 paired seed: needs 2"
    assert comparison.gain_low is None


def test_runs_are_paired_by_seed_not_by_position() -> None:
    # Seed effects of +-1%: pairing by position would mix seeds and see only noise.
    seeds = [11, 3, 7, 5, 2]
    effect = {11: 0.01, 3: -0.01, 7: 0.02, 5: -0.02, 2: 0.0}
    baseline = [SeededMetric(seed=s, value=BASE_NE + effect[s]) for s in seeds]
    shuffled = [4, 9, *reversed(seeds)]  # two seeds the baseline never ran
    jitter = dict(zip(shuffled, [0.0, 0.0, 1e-4, -1e-4, 2e-4, 0.0, -2e-4], strict=True))
    candidate = [
        SeededMetric(seed=s, value=BASE_NE + effect.get(s, 0.5) - 0.004 + jitter[s])
        for s in shuffled
    ]
    inp = GateInput(
        baseline=baseline, candidates=[CandidateRuns(hypothesis_id="h", runs=candidate)]
    )
    [comparison] = gate(inp).comparisons
    assert comparison.seeds == sorted(seeds)
    assert comparison.passed
    assert comparison.gain == pytest.approx(0.004 / BASE_NE)


def test_identical_runs_give_no_evidence() -> None:
    values = np.array([0.92, 0.925, 0.918])
    [comparison] = gate(gate_input(values, [values.copy()])).comparisons
    assert not comparison.passed
    assert comparison.gain == 0.0
    assert comparison.p_value == 1.0
    assert "zero variance" in comparison.reason


def test_holm_adjusts_step_down_and_keeps_order() -> None:
    assert holm([0.01, 0.04, 0.03, 0.5]) == pytest.approx([0.04, 0.09, 0.09, 0.5])
    assert holm([]) == []


def test_duplicate_seeds_and_ids_fail_at_the_boundary() -> None:
    one = [SeededMetric(seed=1, value=0.9)]
    with pytest.raises(ValidationError, match="seeds"):
        GateInput(baseline=one + one, candidates=[])
    with pytest.raises(ValidationError, match="hypothesis ids"):
        GateInput(
            baseline=one,
            candidates=[CandidateRuns(hypothesis_id="h", runs=one)] * 2,
        )


def test_the_activity_returns_a_decision() -> None:
    baseline, candidates = simulate(np.random.default_rng(7), [-0.004, 0.0])
    decision = ActivityEnvironment().run(
        EvidenceActivities().gate_hypotheses, gate_input(baseline, candidates)
    )
    assert isinstance(decision, GateDecision)
    assert decision.passed == ["h0"]
    assert GateDecision.model_validate_json(decision.model_dump_json()) == decision
