"""The local-process runner with real processes and real (tiny) training."""

import os
import signal
import time
from pathlib import Path

import pytest

from activities.jobs import LocalProcessRunner
from contracts import DatasetRef, JobHandle, JobStatus, ModelSpec, TrialSpec


def spec(trial_id: str = "t1", **model: object) -> TrialSpec:
    return TrialSpec(
        campaign_id="campaign-jobs",
        trial_id=trial_id,
        phase="baseline",
        model=ModelSpec(batch_size=128, **({"epochs": 1} | model)),
        dataset=DatasetRef(max_rows=3000),
    )


@pytest.fixture
def runner(tmp_path: Path) -> LocalProcessRunner:
    # Nothing listens on port 1: the job's signal fails and only polling can find the result,
    # which is exactly the fallback under test.
    return LocalProcessRunner(tmp_path, "127.0.0.1:1", "default")


def wait(
    runner: LocalProcessRunner, job: JobHandle, until: str, timeout_s: float = 90
) -> JobStatus:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        status = runner.poll(job)
        if status.state != "running" or (until == "running" and status.progress):
            return status
        time.sleep(0.2)
    raise AssertionError(f"job still running after {timeout_s}s")


def test_job_trains_in_its_own_process_and_poll_finds_its_result(
    runner: LocalProcessRunner,
) -> None:
    job = runner.run(spec(), attempt=1)
    assert job.details["pid"] != os.getpid()
    assert runner.run(spec(), attempt=1) == job  # a retried launch does not start another

    status = wait(runner, job, "done")

    assert status.state == "succeeded", (Path(job.details["job_dir"]) / "log.txt").read_text()
    assert status.result is not None and status.result.validation is not None
    assert status.result.device_hours > 0


def test_stop_makes_the_job_checkpoint_and_report_cancelled(runner: LocalProcessRunner) -> None:
    job = runner.run(spec("long", epochs=200), attempt=1)
    assert wait(runner, job, "running").state == "running"

    status = runner.stop(job)

    assert status.state == "cancelled"
    assert status.result is not None and status.result.state == "cancelled"
    assert any((runner.job_dir(spec("long"), 1).parents[3] / "checkpoints").rglob("*"))


def test_a_job_killed_without_a_word_is_lost(runner: LocalProcessRunner) -> None:
    job = runner.run(spec("killed", epochs=200), attempt=1)
    wait(runner, job, "running")
    os.kill(job.details["pid"], signal.SIGKILL)
    deadline = time.monotonic() + 10
    while runner.poll(job).state == "running" and time.monotonic() < deadline:
        time.sleep(0.1)

    status = runner.poll(job)

    assert status.state == "lost" and "log.txt" in status.message


def test_a_multi_device_job_trains_through_torchrun(runner: LocalProcessRunner) -> None:
    two = spec("two-devices").model_copy(update={"devices": 2})
    job = runner.run(two, attempt=1)

    status = wait(runner, job, "done", timeout_s=180)

    assert status.state == "succeeded", (Path(job.details["job_dir"]) / "log.txt").read_text()
    assert status.result is not None and status.result.validation is not None
    assert status.result.device_hours == pytest.approx(2 * status.result.duration_s / 3600)
