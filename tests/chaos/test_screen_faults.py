"""A worker killed during the multi-fidelity screen loses no rung result and runs no rung
trial twice. Real training, `rea worker` as its own process (`make chaos`)."""

import asyncio

import pytest

from client import make_client
from contracts import Budget, CampaignResult, ModelSpec
from settings import Settings
from store import InsightsStore
from tests.chaos.harness import Worker, start_approved, until
from tests.factories import campaign_request

pytestmark = pytest.mark.chaos

# Full MovieLens-100k for a few epochs: even a screening rung trains long enough to be killed.
TRIAL = ModelSpec(epochs=4, batch_size=256)
KILLS = 2


def screening(status: object) -> bool:
    trials = getattr(status, "trials", [])
    return any(t.state == "running" and "~r" in t.trial_id for t in trials)


@pytest.mark.timeout(1200)
async def test_worker_kills_during_the_screen_lose_and_repeat_no_rung(
    settings: Settings, worker: Worker
) -> None:
    client = await make_client(settings)
    handle = await start_approved(
        client,
        campaign_request(
            protocol="multi-fidelity",
            baseline=TRIAL,
            dataset={},
            budget=Budget(device_hours=0.05, max_parallel_trials=1),
            heartbeat_timeout_s=5.0,
        ),
    )
    for _ in range(KILLS):
        await until(handle, screening, 600)
        await asyncio.sleep(0.5)  # well into the trial
        worker.kill_and_restart()
    result: CampaignResult = await asyncio.wait_for(handle.result(), timeout=900)
    status = result.status

    plan = status.plan
    assert plan is not None and plan.exploration is not None
    assert len(status.rungs) == len(plan.exploration.rungs)
    for rung, planned in zip(status.rungs, plan.exploration.rungs, strict=True):
        # Every candidate screened at this rung has its value: none lost to a kill.
        assert all(v is not None for v in rung.values.values()), rung
        assert len(rung.values) <= planned.candidates
    stored = [r.spec.trial_id for r in InsightsStore(settings.database).trials(handle.id)]
    screened = [t for t in stored if "~r" in t]
    assert len(screened) == len(set(screened))  # each rung trial recorded once
    assert len(screened) == sum(len(r.values) + 1 for r in status.rungs)  # + the baselines
    history = await handle.fetch_history()
    extra = sum(
        e.activity_task_started_event_attributes.attempt - 1
        for e in history.events
        if e.HasField("activity_task_started_event_attributes")
    )
    assert extra <= KILLS  # at most one retry per kill: nothing ran twice
    print(
        f"\nscreen of {[len(r.values) for r in status.rungs]} candidates survived {KILLS} "
        f"worker kills; rung results lost: 0; rung trials run twice: 0; retries: {extra}"
    )
