"""Faults on the real stack: SIGKILLed workers, a restarted Temporal server, a job that dies.

Each test runs the dev server (SQLite persistence) and `rea worker` as separate processes,
trains for real, and breaks things while trials run, exploitation's Optuna study included.
Run alone with `make chaos`.
"""

import asyncio
import contextlib
import json
import os
import signal
from collections.abc import Iterator
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState
from temporalio.client import Client, WorkflowHandle

from client import make_client
from contracts import (
    Budget,
    CampaignResult,
    DatasetRef,
    ModelSpec,
    TrialProgress,
)
from devserver import DevServer
from settings import Settings
from store import InsightsStore
from tests.chaos.harness import Worker, start_approved, until
from tests.factories import campaign_request
from workflows.campaign import CampaignWorkflow

pytestmark = pytest.mark.chaos

# Full MovieLens-100k for several epochs: each trial trains for seconds, long enough to be
# killed in the middle.
SLOW_TRIAL = ModelSpec(epochs=6, batch_size=256)


async def start_campaign(client: Client, **overrides: object) -> WorkflowHandle:
    fields = {"baseline": SLOW_TRIAL, "dataset": {}} | overrides
    return await start_approved(client, campaign_request(**fields))


async def training_checkpointed(
    client: Client, handle: WorkflowHandle, killed: set[tuple[str, int]]
) -> tuple[str, int]:
    """Wait until an attempt of a trial not in ``killed`` has heartbeated a checkpoint.

    A killed attempt keeps showing its last heartbeat (and its checkpoint) until the server
    times it out, so only a heartbeat sent after the attempt started counts.
    """
    for _ in range(1200):
        description = await handle.describe()
        for pending in description.raw_description.pending_activities:
            key = (pending.activity_id, pending.attempt)
            if pending.activity_type.name != "train_trial" or key in killed:
                continue
            started = pending.last_started_time.ToDatetime()
            beat = pending.last_heartbeat_time.ToDatetime()
            if not pending.heartbeat_details.payloads or beat <= started:
                continue
            [progress] = await client.data_converter.decode(
                pending.heartbeat_details.payloads, [TrialProgress]
            )
            if progress.checkpoint_step > 0:
                return key
        await asyncio.sleep(0.1)
    raise AssertionError("no trial wrote a checkpoint")


# Eight trials of six epochs in sequence, three kills and their heartbeat timeouts: about five
# minutes on two cores, more when the host is busy.
@pytest.mark.timeout(900)
async def test_repeated_worker_kills_lose_and_duplicate_nothing(
    settings: Settings, worker: Worker
) -> None:
    client = await make_client(settings)
    handle = await start_campaign(
        client,
        # Enough trials that each of the three kills finds one training.
        budget=Budget(device_hours=10.0, max_parallel_trials=1, max_trials=8),
        heartbeat_timeout_s=5.0,
    )
    kills = 0
    killed: set[tuple[str, int]] = set()
    for _ in range(3):
        # Kill only once a checkpoint exists: a kill before it proves nothing about resuming
        # (screening runs are short, so a fixed sleep could land either side of it).
        killed.add(await training_checkpointed(client, handle, killed))
        worker.kill_and_restart()
        kills += 1
    result: CampaignResult = await asyncio.wait_for(handle.result(), timeout=300)

    trials = result.status.trials
    ids = [t.trial_id for t in trials]
    assert len(ids) == len(set(ids)) == 8
    assert all(t.state == "succeeded" for t in trials)
    stored = InsightsStore(settings.database).trials(handle.id)
    assert sorted(r.spec.trial_id for r in stored) == sorted(ids)  # each recorded once
    history = await handle.fetch_history()
    attempts = [
        e.activity_task_started_event_attributes.attempt
        for e in history.events
        if e.HasField("activity_task_started_event_attributes")
        and e.activity_task_started_event_attributes.attempt > 1
    ]
    assert 0 < sum(a - 1 for a in attempts) <= kills  # at most one extra attempt per kill
    resumed = [r.result for r in stored if r.result and r.result.resumed_from_step > 0]
    assert resumed, "a retried trial should resume from its checkpoint"
    print(
        f"\n{len(trials)} trials in {sum(t.duration_s for t in trials):.0f} s of training; "
        f"kills survived: {kills}; extra attempts: {sum(a - 1 for a in attempts)}; "
        f"trials lost: 0; duplicates: 0; resumed from checkpoint: {len(resumed)}"
    )


async def test_server_restarts_during_jobs_and_timers(
    settings: Settings, server: DevServer, worker: Worker
) -> None:
    client = await make_client(settings)
    handle = await start_campaign(
        client,
        budget=Budget(device_hours=10.0, max_parallel_trials=1, max_trials=2),
        execution="local-process",
    )
    restarts = 0
    for trial in range(2):
        # A job runs and the workflow sleeps on its poll timer: take the server away.
        await until(handle, lambda s, n=trial: len(s.trials) > n and s.trials[n].job is not None)
        server.stop()
        await asyncio.sleep(2.0)
        server.start()
        restarts += 1
    result: CampaignResult = await asyncio.wait_for(handle.result(), timeout=300)

    assert [t.state for t in result.status.trials] == ["succeeded", "succeeded"]
    print(f"\nserver restarts survived: {restarts}; trials lost: 0")


async def test_a_job_killed_silently_is_found_by_polling_and_relaunched(
    settings: Settings, worker: Worker
) -> None:
    client = await make_client(settings)
    handle = await start_campaign(
        client,
        budget=Budget(device_hours=10.0, max_parallel_trials=1, max_trials=1),
        execution="local-process",
    )
    status = await until(handle, lambda s: bool(s.trials) and s.trials[0].job is not None)
    job = status.trials[0].job
    assert job is not None
    progress = Path(job.details["job_dir"]) / "progress.json"
    for _ in range(240):  # wait until it has trained a little (and checkpointed)
        if progress.exists():
            break
        await asyncio.sleep(0.25)
    await asyncio.sleep(2.0)
    os.kill(job.details["pid"], signal.SIGKILL)  # no result, no signal: only polling can tell

    result: CampaignResult = await asyncio.wait_for(handle.result(), timeout=300)

    trial = result.status.trials[0]
    assert trial.state == "succeeded"
    stored = InsightsStore(settings.database).trials(handle.id)
    assert stored[0].result is not None and stored[0].result.resumed_from_step > 0


# Exploitation comes after a whole validation, so every trial is small: a second or two on a
# 2-core host, two at a time. With 100 steps an epoch (25,600 training rows in batches of
# 256) and four epochs, the kill in training lands after the checkpoint at step 200 (the end
# of epoch 2): the retry resumes a trial that has already reported to the pruner. A kill in
# search_ask needs no such timing, and trains on less.
TINY_TRIAL = ModelSpec(
    epochs=4, batch_size=256, embedding_dim=8, dense_hidden=[16], over_hidden=[16, 8]
)
TINY_DATA = {"training": DatasetRef(max_rows=32_000), "ask": DatasetRef(max_rows=3_000)}
CHECKPOINTED_EPOCHS = 2

# Put on the PYTHONPATH of a worker, this kills it (SIGKILL) inside its first search_ask,
# after Optuna has created the trial and before the ask id is stored with it: the moment a
# retried ask must not ask again. The marker file makes it fire once, not in the restarted
# worker.
DIE_MID_ASK = """
import os, signal
from pathlib import Path

import optuna.trial

from activities.search import ASK_ID_ATTR

_marker = Path(os.environ["REA_DATA_DIR"]) / "died-mid-ask"
_set_user_attr = optuna.trial.Trial.set_user_attr


def _set_user_attr_or_die(self, key, value):
    if key == ASK_ID_ATTR and not _marker.exists():
        _marker.touch()
        os.kill(os.getpid(), signal.SIGKILL)
    _set_user_attr(self, key, value)


optuna.trial.Trial.set_user_attr = _set_user_attr_or_die
"""


@contextlib.contextmanager
def exploitation_study(settings: Settings, campaign_id: str) -> Iterator[optuna.Study]:
    """A campaign's exploitation study, read from the storage the workers write.

    Open it only once the study exists: RDB storage on a fresh file creates its schema,
    which would race with a worker doing the same.
    """
    storage = optuna.storages.RDBStorage(settings.search_storage_url)
    try:
        yield optuna.load_study(study_name=f"{campaign_id}/exploitation", storage=storage)
    finally:
        storage.engine.dispose()


async def study_trial_checkpointed(
    settings: Settings, handle: WorkflowHandle
) -> optuna.trial.FrozenTrial:
    """Wait until a tuned trial is training past its checkpoint: it has reported
    ``CHECKPOINTED_EPOCHS`` epochs, not its last, to the study's pruner, and is not told.
    Return its study trial."""
    # Once the first ask has returned, the study exists.
    status = await until(handle, lambda s: bool(s.tuned) or s.phase in ("done", "failed"))
    assert status.tuned, f"the campaign ended in {status.phase} without exploitation"
    with exploitation_study(settings, handle.id) as study:
        for _ in range(1200):
            status = await handle.query(CampaignWorkflow.status)
            if status.phase != "exploitation":
                raise AssertionError("exploitation ended with no tuned trial caught training")
            running = {
                t.arm for t in status.trials if t.phase == "exploitation" and t.state == "running"
            }
            for trial in await asyncio.to_thread(study.get_trials):
                if (
                    f"x{trial.number}" in running
                    and trial.state == TrialState.RUNNING
                    and len(trial.intermediate_values) == CHECKPOINTED_EPOCHS
                ):
                    return trial
            await asyncio.sleep(0.05)
    raise AssertionError("no tuned trial was caught training past its checkpoint")


async def retried_activities(handle: WorkflowHandle) -> list[tuple[str, dict]]:
    """The activities that took more than one attempt: (type, input), once per extra attempt."""
    scheduled = {}
    retried = []
    for event in (await handle.fetch_history()).events:
        if event.HasField("activity_task_scheduled_event_attributes"):
            attributes = event.activity_task_scheduled_event_attributes
            payloads = attributes.input.payloads
            scheduled[event.event_id] = (
                attributes.activity_type.name,
                json.loads(payloads[0].data) if payloads else {},
            )
        elif event.HasField("activity_task_started_event_attributes"):
            started = event.activity_task_started_event_attributes
            retried += [scheduled[started.scheduled_event_id]] * (started.attempt - 1)
    return retried


@pytest.mark.parametrize(
    "kill_in",
    ["training", "ask"],
)
async def test_an_optuna_study_survives_a_worker_kill_in_exploitation(
    settings: Settings, server: DevServer, kill_in: str
) -> None:
    env: dict[str, str] = {}
    if kill_in == "ask":
        hook = settings.data_dir / "hook"
        hook.mkdir()
        (hook / "sitecustomize.py").write_text(DIE_MID_ASK)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(hook), os.environ.get("PYTHONPATH")]))
    worker = Worker(settings, training_slots=2, env=env)
    try:
        client = await make_client(settings)
        handle = await start_campaign(
            client,
            baseline=TINY_TRIAL,
            dataset=TINY_DATA[kill_in],
            budget=Budget(device_hours=10.0, max_parallel_trials=2),
            heartbeat_timeout_s=5.0,
            seeds=2,
            # No gain of 50% passes a gate: exploitation tunes around the baseline, with its
            # 100 steps an epoch, and the campaign has no combination or confirmation.
            min_effect=0.5,
            exploitation_trials=4,
        )
        if kill_in == "training":
            in_flight = await study_trial_checkpointed(settings, handle)
            # Orchestration and training die together, like a host.
            worker.kill_and_restart()
            where = f"study trial {in_flight.number} training past its checkpoint"
        else:
            assert await worker.restart_once_dead() == -signal.SIGKILL
            where = "search_ask, between Optuna's ask and storing the ask id"
        result: CampaignResult = await asyncio.wait_for(handle.result(), timeout=240)
    finally:
        worker.stop()

    status = result.status
    assert status.phase == "done", status.error or status.message
    tuned = sorted(status.tuned, key=lambda arm: int(arm[1:]))
    assert len(tuned) == 4 and status.search_rounds == 2
    ids = [t.trial_id for t in status.trials]
    assert len(ids) == len(set(ids)), "a trial ran twice"
    explored = [t for t in status.trials if t.trial_id.endswith("~x")]
    assert sorted((t.arm for t in explored), key=lambda arm: int(arm[1:])) == tuned
    assert all(t.phase == "exploitation" for t in status.trials if t.arm in status.tuned)

    with exploitation_study(settings, handle.id) as opened:
        study = opened.get_trials()
    unfinished = [t.number for t in study if not t.state.is_finished()]
    assert unfinished == [], f"study trials {unfinished} were never told (orphans)"
    # No orphan asks: every trial of the study is a tuned arm that ran, and was told how.
    assert [f"x{t.number}" for t in study] == tuned
    told = {"succeeded": TrialState.COMPLETE, "pruned": TrialState.PRUNED}
    assert {f"x{t.number}": t.state for t in study} == {
        t.arm: told.get(t.state, TrialState.FAIL) for t in explored
    }
    # Each finished epoch was reported once, at its own step (steps from 1).
    by_arm = {t.arm: t for t in explored}
    for trial in study:
        if by_arm[f"x{trial.number}"].state == "succeeded":
            assert sorted(trial.intermediate_values) == list(range(1, TINY_TRIAL.epochs + 1))
            assert trial.intermediate_values[TINY_TRIAL.epochs] == trial.value
    spent = status.ledger.phases["exploitation"].spent
    assert spent > 0

    retried = await retried_activities(handle)
    results = {
        r.spec.trial_id: r.result for r in InsightsStore(settings.database).trials(handle.id)
    }
    if kill_in == "training":
        # The kill hit that trial's training; a new worker resumed it from its checkpoint.
        trained_again = [i["trial_id"] for name, i in retried if name == "train_trial"]
        assert f"x{in_flight.number}~x" in trained_again, retried
        resumed = results[f"x{in_flight.number}~x"]
        assert resumed is not None and resumed.resumed_from_step > 0
    else:
        assert "search_ask" in [name for name, _ in retried], retried
    outcomes = ", ".join(f"{t.arm} {t.state}" for t in explored)
    print(
        f"\nkills survived: 1 (in {where}); extra attempts: "
        f"{sorted(name for name, _ in retried)}; study trials: {len(study)}; "
        f"tuned arms: {len(tuned)} ({outcomes}); exploitation device-hours: {spent:.2e}; "
        f"trials: {len(ids)}"
    )
    # Each trial's result lists its epochs as the study has them (the study's are right:
    # checked above), the resumed trial's included.
    wrong = {}
    for trial in study:
        record = results[f"x{trial.number}~x"]
        if record is not None and record.state == "succeeded":
            epochs = [trial.intermediate_values[k] for k in range(1, TINY_TRIAL.epochs + 1)]
            if record.epoch_values != epochs:
                wrong[record.trial_id] = {"result": record.epoch_values, "study": epochs}
    assert not wrong, wrong
