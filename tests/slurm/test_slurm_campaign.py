"""Whole campaigns whose trials run as Slurm jobs: the dev server, a `rea worker` process with
``REA_JOB_BACKEND=slurm``, real planning and real training on the single-node cluster."""

import asyncio
import hashlib
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from temporalio.client import WorkflowFailureError, WorkflowHandle

from client import make_client
from contracts import Budget, CampaignResult, CampaignStatus, ModelSpec
from devserver import DevServer, free_port
from settings import Settings
from slurmdev import PARTITION, SlurmCluster
from tests.chaos.harness import Worker, start_approved, until
from tests.factories import campaign_request
from tests.slurm.conftest import slurm_out

pytestmark = pytest.mark.slurm

TWO_TRIALS = Budget(device_hours=10.0, max_parallel_trials=2, max_trials=2)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(
        temporal_address=f"127.0.0.1:{free_port()}",
        ui_port=free_port(),
        data_dir=tmp_path,
        job_backend="slurm",
    )


@pytest.fixture
def worker(slurm: SlurmCluster, settings: Settings) -> Iterator[Worker]:
    with DevServer(settings):
        worker = Worker(settings, env={"REA_JOB_BACKEND": "slurm", **slurm.env})
        yield worker
        worker.stop()


def job_name_prefix(campaign_id: str) -> str:
    return f"rea-{hashlib.sha1(campaign_id.encode()).hexdigest()[:8]}-"


def queued(campaign_id: str) -> list[str]:
    """The states of the campaign's jobs in the controller's queue."""
    out = slurm_out("squeue", "-h", "-o", "%j|%T")
    rows = [line.split("|") for line in out.splitlines() if line.strip()]
    return [state for name, state in rows if name.startswith(job_name_prefix(campaign_id))]


def campaign_jobs(campaign_id: str) -> list[list[str]]:
    """Slurm's accounting of the campaign's jobs: [id, state, elapsed s, AllocTRES] each."""
    prefix = job_name_prefix(campaign_id)
    out = slurm_out(
        "sacct",
        "-X",
        "-P",
        "-n",
        "-S",
        "2000-01-01",
        "-o",
        "JobID,JobName,State,ElapsedRaw,AllocTRES",
    )
    rows = [line.split("|") for line in out.splitlines() if line.strip()]
    return [[r[0], r[2], r[3], r[4]] for r in rows if r[1].startswith(prefix)]


def accounted_hours(jobs: list[list[str]]) -> float:
    """Elapsed seconds times cores held, summed, in hours (what the ledger must charge)."""
    total = 0
    for _, _, elapsed, tres in jobs:
        total += int(elapsed) * int(dict(kv.split("=") for kv in tres.split(","))["cpu"])
    return total / 3600


def partition(state: str) -> None:
    subprocess.run(
        ["scontrol", "update", f"PartitionName={PARTITION}", f"State={state}"], check=True
    )


async def start(settings: Settings, **overrides: object) -> WorkflowHandle:
    client = await make_client(settings)
    fields = {"execution": "job", "budget": TWO_TRIALS} | overrides
    return await start_approved(client, campaign_request(**fields))


async def test_a_campaign_of_slurm_jobs_completes_charged_what_slurm_accounted(
    settings: Settings, worker: Worker
) -> None:
    handle = await start(settings)

    result: CampaignResult = await asyncio.wait_for(handle.result(), timeout=300)

    status = result.status
    assert [t.state for t in status.trials] == ["succeeded", "succeeded"]
    jobs = campaign_jobs(handle.id)
    assert len(jobs) == 2 and {state for _, state, _, _ in jobs} == {"COMPLETED"}
    assert status.ledger.spent == pytest.approx(accounted_hours(jobs), abs=1e-12)
    assert status.plan is not None and "Slurm" in status.plan.compute_target


async def test_a_worker_restart_while_jobs_are_queued_loses_nothing(
    settings: Settings, worker: Worker
) -> None:
    partition("DOWN")  # jobs queue and wait, as on a busy cluster
    try:
        handle = await start(settings)
        await until(handle, lambda s: sum(t.job is not None for t in s.trials) == 2)
        assert queued(handle.id) == ["PENDING", "PENDING"]

        worker.kill_and_restart()
        await asyncio.sleep(2.0)
    finally:
        partition("UP")
    result: CampaignResult = await asyncio.wait_for(handle.result(), timeout=300)

    assert [t.state for t in result.status.trials] == ["succeeded", "succeeded"]
    jobs = campaign_jobs(handle.id)
    assert len(jobs) == 2  # nothing submitted twice, nothing lost
    assert result.status.ledger.spent == pytest.approx(accounted_hours(jobs), abs=1e-12)


async def test_cancelling_a_campaign_stops_its_slurm_jobs(
    settings: Settings, worker: Worker
) -> None:
    handle = await start(settings, baseline=ModelSpec(epochs=400, batch_size=128))

    def training(status: CampaignStatus) -> bool:
        folders = [Path(t.job.details["job_dir"]) for t in status.trials if t.job is not None]
        return len(folders) == 2 and all((f / "progress.json").exists() for f in folders)

    await until(handle, training, timeout_s=240)
    await handle.cancel()
    with pytest.raises(WorkflowFailureError):
        await asyncio.wait_for(handle.result(), timeout=120)

    jobs = campaign_jobs(handle.id)
    assert len(jobs) == 2
    # Each job was asked to stop, checkpointed and exited on its own (not killed).
    assert {state for _, state, _, _ in jobs} == {"COMPLETED"}
    checkpoints = settings.data_dir / "checkpoints" / handle.id
    assert len([p for p in checkpoints.iterdir() if any(p.iterdir())]) == 2
