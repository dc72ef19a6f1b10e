"""The campaign chart."""

from pathlib import Path

import pytest

from contracts import CampaignStatus, TrialSummary
from report import plot_campaign
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
