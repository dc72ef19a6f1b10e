"""Committed histories replay against today's workflow code (see tests/histories/record.py)."""

from pathlib import Path

import pytest
from temporalio.client import WorkflowHistory
from temporalio.worker import Replayer

from client import client_options
from worker import WORKFLOW_RUNNER
from workflows.campaign import CampaignWorkflow

HISTORIES = Path(__file__).parent.parent / "histories"


def replayer() -> Replayer:
    return Replayer(
        workflows=[CampaignWorkflow],
        workflow_runner=WORKFLOW_RUNNER,
        data_converter=client_options()["data_converter"],
    )


def history(name: str) -> WorkflowHistory:
    return WorkflowHistory.from_json("campaign-recorded", (HISTORIES / name).read_text())


@pytest.mark.parametrize("name", sorted(p.name for p in HISTORIES.glob("campaign_v*.json")))
async def test_committed_campaign_history_replays(name: str) -> None:
    result = await replayer().replay_workflow(history(name))
    assert result.replay_failure is None


async def test_incompatible_history_is_caught() -> None:
    with pytest.raises(Exception, match=r"(?i)nondetermin"):
        await replayer().replay_workflow(history("incompatible.json"))
