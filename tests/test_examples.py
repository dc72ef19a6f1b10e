"""The example files a user starts from are valid: campaigns, task files and the trial spec."""

from pathlib import Path

import pytest

from cli.local import LocalTrial
from contracts import DEFAULT_ACTION_SPACE, CampaignRequest, ModelSpec

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
CAMPAIGNS = sorted(EXAMPLES.glob("*-campaign.json")) + sorted(EXAMPLES.glob("tasks/*.json"))


def test_there_are_task_files_for_movielens_and_three_synthetic_tasks() -> None:
    names = {p.stem for p in EXAMPLES.glob("tasks/*.json")}
    assert "ml100k" in names and len({n for n in names if n.startswith("synthetic-")}) >= 3


@pytest.mark.parametrize("path", CAMPAIGNS, ids=lambda p: p.stem)
def test_every_campaign_file_is_a_valid_request_with_a_baseline_inside_the_action_space(
    path: Path,
) -> None:
    request = CampaignRequest.model_validate_json(path.read_text())
    baseline = request.baseline.model_dump(exclude={"seed", "table_rows"})
    DEFAULT_ACTION_SPACE.check(baseline)
    assert request.goal


def test_the_trial_example_is_a_valid_local_trial() -> None:
    trial = LocalTrial.model_validate_json((EXAMPLES / "ml100k-trial.json").read_text())
    assert isinstance(trial.model, ModelSpec)
