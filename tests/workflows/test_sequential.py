"""The sequential gates' pure rules: the schedule of looks, the split of alpha, which
candidates get more seeds, and how the confirmation ranks what passed."""

import pytest

from contracts import Comparison, GateDecision
from workflows import sequential


def comparison(
    h: str, gain: float, low: float | None, high: float | None, passed: bool = False
) -> Comparison:
    return Comparison(hypothesis_id=h, gain=gain, gain_low=low, gain_high=high, passed=passed)


def decision(*comparisons: Comparison) -> GateDecision:
    return GateDecision(
        metric="ne",
        correction="holm",
        alpha=0.05,
        min_effect=0.005,
        comparisons=list(comparisons),
        passed=[c.hypothesis_id for c in comparisons if c.passed],
    )


def test_looks_step_by_two_up_to_the_cap_and_split_alpha_over_them() -> None:
    assert sequential.looks(3, 8) == [3, 5, 7, 8]
    assert sequential.looks(3, 7) == [3, 5, 7]
    assert sequential.looks(5, 3) == [3]
    assert sequential.look_alpha(0.05, [3, 5, 7, 8]) == pytest.approx(0.05 / 4)
    assert sequential.look_confidence(0.05, [3, 5, 7, 8]) == pytest.approx(1 - 2 * 0.05 / 4)


def test_the_last_gate_takes_one_look_at_the_seeds_it_can_afford():
    assert sequential.schedule(3, 8) == [3, 5, 7, 8]  # earlier gates: sequential looks
    assert sequential.schedule(3, 3) == [3]  # a budget for one look keeps the whole alpha
    assert sequential.schedule(3, 6, final=True) == [6]
    assert sequential.look_alpha(0.05, sequential.schedule(3, 6, final=True)) == 0.05


def test_only_a_straddling_candidate_above_the_minimum_effect_gets_more_seeds() -> None:
    gate = decision(
        comparison("passed", 0.02, 0.01, 0.03, passed=True),
        comparison("straddles", 0.006, -0.002, 0.014),
        comparison("futile", 0.002, -0.006, 0.010),  # mean below the minimum effect
        comparison("below", -0.01, -0.02, -0.001),
        comparison("untested", 0.0, None, None),
    )
    assert sequential.undecided(gate, min_effect=0.005) == ["straddles", "untested"]


def test_the_confirmation_takes_the_most_certain_gain_first() -> None:
    first = decision(comparison("wide", 0.03, 0.001, 0.059, passed=True))
    second = decision(
        comparison("narrow", 0.02, 0.015, 0.025, passed=True),
        comparison("failed", 0.05, -0.01, 0.11),
    )
    assert sequential.by_lower_bound([first, second]) == ["narrow", "wide"]
