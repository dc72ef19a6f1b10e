"""The campaign chart."""

from pathlib import Path

import pytest

from contracts import CampaignStatus, TrialSummary
from report import plot_campaign, plot_evidence
from tests.factories import result_of


def finished(trial_id: str, phase: str, ne: float) -> TrialSummary:
    return TrialSummary(trial_id=trial_id, phase=phase).finished(result_of("c", trial_id, ne, 0.1))  # type: ignore[arg-type]


def test_plot_writes_a_png(tmp_path: Path) -> None:
    status = CampaignStatus(
        campaign_id="c",
        phase="done",
        trials=[
            finished("baseline", "baseline", 0.92),
            finished("v-a", "validation", 0.91),
            finished("c-a+b", "combination", 0.90),
            TrialSummary(trial_id="v-b", phase="validation", state="failed"),
        ],
        baseline_metric=0.92,
        best_trial_id="c-a+b",
    )
    path = plot_campaign(status, tmp_path / "chart.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 10_000


def test_nothing_to_plot_says_so(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="no finished trial"):
        plot_campaign(CampaignStatus(campaign_id="c"), tmp_path / "chart.png")


def test_evidence_plot_draws_every_tested_comparison(tmp_path: Path) -> None:
    from contracts import Comparison, GateDecision

    def decision(split: str, *gains: tuple[str, float, bool]) -> GateDecision:
        return GateDecision(
            metric="ne",
            correction="Holm-Bonferroni",
            alpha=0.05,
            min_effect=0.0,
            split=split,  # type: ignore[arg-type]
            comparisons=[
                Comparison(
                    hypothesis_id=a, gain=g, gain_low=g - 0.004, gain_high=g + 0.004, passed=p
                )
                for a, g, p in gains
            ],
        )

    status = CampaignStatus(
        campaign_id="c",
        protocol="evidence",
        decisions={
            "validation": decision("validation", ("v-a", 0.01, True), ("v-b", 0.001, False)),
            "confirmation": decision("test", ("v-a", 0.008, True)),
        },
    )
    path = plot_evidence(status, tmp_path / "evidence.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 10_000
    with pytest.raises(ValueError, match="no gate decision"):
        plot_evidence(CampaignStatus(campaign_id="c"), tmp_path / "none.png")


def test_charts_are_written_for_what_there_is(tmp_path: Path) -> None:
    from contracts import Comparison, GateDecision
    from report import write_report

    untested = GateDecision(
        metric="ne",
        correction="Holm-Bonferroni",
        alpha=0.05,
        min_effect=0.0,
        comparisons=[Comparison(hypothesis_id="v-a", reason="only 0 paired seeds: needs 2")],
    )
    status = CampaignStatus(
        campaign_id="c",
        protocol="evidence",
        trials=[finished("baseline~r0", "baseline", 0.92)],
        decisions={"validation": untested},
    )
    # A gate that could test nothing (too few seeds ran) draws no evidence chart.
    write_report(status, tmp_path / "some")
    assert (tmp_path / "some" / "c.png").exists()
    assert not (tmp_path / "some" / "c-evidence.png").exists()
    write_report(CampaignStatus(campaign_id="c"), tmp_path / "none")
    assert list((tmp_path / "none").glob("*.png")) == []
