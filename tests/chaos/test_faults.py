"""Faults on the real stack: SIGKILLed workers, a restarted Temporal server, a job that dies.

Each test runs the dev server (SQLite persistence) and `rea worker` as separate processes,
trains for real, and breaks things while trials run; one kills the worker while exploitation's
Optuna study has a trial in flight. Run alone with `make chaos`.
"""

import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState
from temporalio.client import Client, WorkflowHandle

from activities.results import SqliteTrialStore
from client import make_client
from contracts import (
    ApproveInput,
    Budget,
    CampaignResult,
    CampaignStatus,
    DatasetRef,
    ModelSpec,
)
from devserver import DevServer
from settings import Settings
from tests.factories import APPROVER, campaign_request
from workflows.campaign import CampaignWorkflow
from workflows.options import ORCHESTRATION_QUEUE

pytestmark = pytest.mark.chaos

# Full MovieLens-100k for several epochs: each trial trains for seconds, long enough to be
# killed in the middle.
SLOW_TRIAL = ModelSpec(epochs=6, batch_size=256)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(
        temporal_address=f"127.0.0.1:{free_port()}", ui_port=free_port(), data_dir=tmp_path
    )


@pytest.fixture
def server(settings: Settings) -> Iterator[DevServer]:
    with DevServer(settings) as dev:
        yield dev


class Worker:
    """`rea worker` as its own process, so that it can be SIGKILLed like a crashed host."""

    def __init__(self, settings: Settings, training_slots: int = 1) -> None:
        self._env = os.environ | {
            "REA_TEMPORAL_ADDRESS": settings.temporal_address,
            "REA_DATA_DIR": str(settings.data_dir),
            "REA_TRAINING_SLOTS": str(training_slots),
        }
        self._log = (settings.data_dir / "worker.log").open("ab")
        self.process = self._spawn()

    def _spawn(self) -> subprocess.Popen[bytes]:
        rea = Path(sys.executable).parent / "rea"
        return subprocess.Popen(
            [str(rea), "worker"], env=self._env, stdout=self._log, stderr=subprocess.STDOUT
        )

    def kill_and_restart(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()
        self.process = self._spawn()

    def stop(self) -> None:
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
        self._log.close()


@pytest.fixture
def worker(settings: Settings, server: DevServer) -> Iterator[Worker]:
    worker = Worker(settings)
    yield worker
    worker.stop()


async def start_campaign(client: Client, **overrides: object) -> WorkflowHandle:
    fields = {"baseline": SLOW_TRIAL, "dataset": {}} | overrides
    handle = await client.start_workflow(
        CampaignWorkflow.run,
        campaign_request(**fields),
        id=f"chaos-{uuid.uuid4()}",
        task_queue=ORCHESTRATION_QUEUE,
    )
    await until(handle, lambda s: s.phase == "awaiting_approval")
    await handle.execute_update(CampaignWorkflow.approve, ApproveInput(approver=APPROVER))
    return handle


async def until(handle: WorkflowHandle, done, timeout_s: float = 240) -> CampaignStatus:  # type: ignore[no-untyped-def]
    """Poll the status query until ``done(status)``; survives a server that is restarting."""
    for _ in range(int(timeout_s / 0.25)):
        try:
            status = await handle.query(CampaignWorkflow.status)
            if done(status):
                return status
        except Exception:  # the server or every worker may be down for a moment
            pass
        await asyncio.sleep(0.25)
    raise AssertionError("condition not reached")


async def training_started(client: Client, handle: WorkflowHandle) -> str:
    """Wait until a trial is mid-training (it has heartbeated progress); return its id."""
    for _ in range(960):
        description = await handle.describe()
        for pending in description.raw_description.pending_activities:
            if pending.activity_type.name == "train_trial" and pending.heartbeat_details.payloads:
                return pending.activity_id
        await asyncio.sleep(0.25)
    raise AssertionError("no trial started training")


async def test_repeated_worker_kills_lose_and_duplicate_nothing(
    settings: Settings, worker: Worker
) -> None:
    client = await make_client(settings)
    handle = await start_campaign(
        client,
        budget=Budget(device_hours=10.0, max_parallel_trials=1, max_trials=4),
        heartbeat_timeout_s=5.0,
    )
    kills = 0
    for _ in range(3):
        await training_started(client, handle)
        await asyncio.sleep(2.0)  # past a few checkpoints
        worker.kill_and_restart()
        kills += 1
    result: CampaignResult = await asyncio.wait_for(handle.result(), timeout=300)

    trials = result.status.trials
    ids = [t.trial_id for t in trials]
    assert len(ids) == len(set(ids)) == 4
    assert all(t.state == "succeeded" for t in trials)
    stored = SqliteTrialStore(settings.results_db).list(handle.id)
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
        f"\nkills survived: {kills}; extra attempts: {sum(a - 1 for a in attempts)}; "
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
    stored = SqliteTrialStore(settings.results_db).list(handle.id)
    assert stored[0].result is not None and stored[0].result.resumed_from_step > 0


# Exploitation comes after a whole validation (and maybe combination), so every trial is
# small: about a second on a 2-core host, two at a time. Three epochs leave two in which to
# kill a tuned trial after its first has been reported to the pruner.
TINY_TRIAL = ModelSpec(
    epochs=3, batch_size=256, embedding_dim=8, dense_hidden=[16], over_hidden=[16, 8]
)
TINY_DATA = DatasetRef(max_rows=30_000)


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


async def study_trial_in_flight(
    settings: Settings, handle: WorkflowHandle
) -> optuna.trial.FrozenTrial:
    """Wait until a tuned trial is training and has reported its first epoch, not its last,
    to the study's pruner: asked, half-trained, not told. Return its study trial."""
    # The first ask has returned: the study exists.
    await until(handle, lambda s: (s.phase != "validation" and bool(s.tuned)) or s.phase == "done")
    with exploitation_study(settings, handle.id) as study:
        for _ in range(1200):
            status: CampaignStatus = await handle.query(CampaignWorkflow.status)
            if status.phase != "exploitation":
                raise AssertionError("exploitation ended with no tuned trial caught training")
            running = {
                t.arm for t in status.trials if t.phase == "exploitation" and t.state == "running"
            }
            for trial in await asyncio.to_thread(study.get_trials):
                if (
                    f"x{trial.number}" in running
                    and trial.state == TrialState.RUNNING
                    and len(trial.intermediate_values) == 1
                ):
                    return trial
            await asyncio.sleep(0.05)
    raise AssertionError("no tuned trial reported an epoch")


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


async def test_an_optuna_study_survives_a_worker_kill_in_exploitation(
    settings: Settings, server: DevServer
) -> None:
    worker = Worker(settings, training_slots=2)
    try:
        client = await make_client(settings)
        handle = await start_campaign(
            client,
            baseline=TINY_TRIAL,
            dataset=TINY_DATA,
            budget=Budget(device_hours=10.0, max_parallel_trials=2),
            heartbeat_timeout_s=5.0,
            seeds=2,
            exploitation_trials=4,
        )
        in_flight = await study_trial_in_flight(settings, handle)
        worker.kill_and_restart()  # orchestration and training die together, like a host
        kills = 1
        result: CampaignResult = await asyncio.wait_for(handle.result(), timeout=240)
    finally:
        worker.stop()

    status = result.status
    assert status.phase == "done", status.error or status.message
    tuned = sorted(status.tuned)
    assert len(tuned) == 4 and status.search_rounds == 2
    ids = [t.trial_id for t in status.trials]
    assert len(ids) == len(set(ids)), "a trial ran twice"
    explored = sorted(t.arm for t in status.trials if t.trial_id.endswith("~x"))
    assert explored == tuned, "each tuned arm is trained exactly once"
    assert all(t.phase == "exploitation" for t in status.trials if t.arm in status.tuned)

    with exploitation_study(settings, handle.id) as opened:
        study = opened.get_trials()
    # No orphan: every asked move is a tuned arm, and the study told each how it ended.
    assert sorted(f"x{t.number}" for t in study) == tuned
    assert [t for t in study if not t.state.is_finished()] == []
    assert in_flight.number in {t.number for t in study}
    outcome = {t.arm: t.state for t in status.trials if t.trial_id.endswith("~x")}
    told = {"succeeded": TrialState.COMPLETE, "pruned": TrialState.PRUNED}
    assert {f"x{t.number}": t.state for t in study} == {
        arm: told.get(state, TrialState.FAIL) for arm, state in outcome.items()
    }
    spent = status.ledger.phases["exploitation"].spent
    assert spent > 0
    # The kill hit the in-flight trial's training, which a new worker ran again.
    retried = await retried_activities(handle)
    trained_again = [i["trial_id"] for name, i in retried if name == "train_trial"]
    assert f"x{in_flight.number}~x" in trained_again, retried
    print(
        f"\nkills survived: {kills} (study trial {in_flight.number} in flight, "
        f"{len(in_flight.intermediate_values)} epoch(s) reported); "
        f"extra attempts: {sorted(name for name, _ in retried)}; study trials: {len(study)}; "
        f"tuned arms: {len(tuned)} ({', '.join(f'{a} {outcome[a]}' for a in tuned)}); "
        f"exploitation device-hours: {spent:.2e}; trials: {len(ids)}"
    )
