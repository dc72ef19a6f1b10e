"""Broad exploration means many trials: the state stays small (issue 21's bound).

A multi-fidelity campaign of over 5,000 cheap trials (fake training, a real Optuna study) on
the time-skipping server: the state continue-as-new carries stays under 256 KB and the status
answer under 512 KB, while every trial is recorded in the store.
"""

import asyncio
import os

import pytest
from temporalio.testing import WorkflowEnvironment

from contracts import Budget, CampaignResult
from tests.fakes import FakeActivities
from tests.workflows.drive import start_approved
from workflows.campaign import CampaignWorkflow

KB = 1024
# 14 device-hours of 0.001-hour trials: over 5,000 trials (SCALE_HOURS=1.5 for a quick look).
HOURS = float(os.environ.get("SCALE_HOURS", "14"))


@pytest.mark.scale
@pytest.mark.timeout(1800)
async def test_five_thousand_trials_keep_the_state_small(
    time_skipping_env: WorkflowEnvironment, queue: str, fakes: FakeActivities, workers: None
) -> None:
    fakes.trial_seconds = 3.6  # a trial costs 0.001 device-hours
    handle = await start_approved(
        time_skipping_env,
        queue,
        protocol="multi-fidelity",
        sampler="random",  # TPE's cost per ask grows with the study; the bound is the point
        exploration_share=0.9,
        budget=Budget(device_hours=HOURS, max_parallel_trials=64, max_trials=10_000),
    )
    ending = asyncio.ensure_future(handle.result())
    largest_answer = 0
    while not ending.done():
        status = await handle.query(CampaignWorkflow.status)
        largest_answer = max(largest_answer, len(status.model_dump_json()))
        await asyncio.wait({ending}, timeout=2.0)
    try:
        result: CampaignResult = ending.result()
    except Exception as err:  # say why, not only that it failed
        cause = getattr(err, "cause", None)
        raise AssertionError(f"{err}: {cause!r}: {getattr(cause, 'cause', None)!r}") from err
    status = result.status
    assert status.phase == "done", status.error
    assert len(fakes.recorded) >= 5000
    assert len(status.trials) + status.trials_archived == len(fakes.recorded)
    assert status.runs > 1  # it continued as new, carrying the state
    carried = len(status.model_dump_json())
    print(
        f"\n{len(fakes.recorded)} trials, {status.runs} runs: carried state {carried / KB:.0f} KB, "
        f"largest status answer {largest_answer / KB:.0f} KB"
    )
    assert carried < 256 * KB
    assert largest_answer < 512 * KB
