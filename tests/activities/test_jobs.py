"""The local-process runner with real processes and real (tiny) training."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from temporalio.exceptions import ApplicationError

from activities.backends.local import LocalProcessRunner
from contracts import AccessScope, DatasetRef, ModelSpec, TrialSpec
from tests.job_polling import wait_for_job


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


def test_job_trains_in_its_own_process_and_poll_finds_its_result(
    runner: LocalProcessRunner,
) -> None:
    job = runner.run(spec(), attempt=1)
    assert job.details["pid"] != os.getpid()
    assert runner.run(spec(), attempt=1) == job  # a retried launch does not start another

    status = wait_for_job(runner, job, "done")

    assert status.state == "succeeded", (Path(job.details["job_dir"]) / "log.txt").read_text()
    assert status.result is not None and status.result.validation is not None
    assert status.result.device_hours > 0


def test_stop_makes_the_job_checkpoint_and_report_cancelled(runner: LocalProcessRunner) -> None:
    job = runner.run(spec("long", epochs=200), attempt=1)
    assert wait_for_job(runner, job, "training").state == "running"

    status = runner.stop(job)

    assert status.state == "cancelled"
    assert status.result is not None and status.result.state == "cancelled"
    assert any((runner.job_dir(spec("long"), 1).parents[3] / "checkpoints").rglob("*"))


def test_a_job_killed_without_a_word_is_lost(runner: LocalProcessRunner) -> None:
    job = runner.run(spec("killed", epochs=200), attempt=1)
    wait_for_job(runner, job, "training")
    os.kill(job.details["pid"], signal.SIGKILL)
    deadline = time.monotonic() + 10
    while runner.poll(job).state == "running" and time.monotonic() < deadline:
        time.sleep(0.1)

    status = runner.poll(job)

    assert status.state == "lost" and "log.txt" in status.message


def test_a_multi_device_job_trains_through_torchrun(runner: LocalProcessRunner) -> None:
    two = spec("two-devices").model_copy(update={"devices": 2})
    job = runner.run(two, attempt=1)

    status = wait_for_job(runner, job, "done", timeout_s=180)

    assert status.state == "succeeded", (Path(job.details["job_dir"]) / "log.txt").read_text()
    assert status.result is not None and status.result.validation is not None
    assert status.result.device_hours == pytest.approx(2 * status.result.duration_s / 3600)


def test_a_job_outside_its_access_scope_is_refused_and_nothing_launched(
    runner: LocalProcessRunner, tmp_path: Path
) -> None:
    outside = spec("scoped").model_copy(
        update={
            "dataset": DatasetRef(path=str(tmp_path / "elsewhere")),
            "access": AccessScope(read=[str(tmp_path / "data")]),
        }
    )
    with pytest.raises(ApplicationError) as denied:
        runner.run(outside, attempt=1)
    assert denied.value.type == "AccessDenied" and "elsewhere" in str(denied.value)
    assert not runner.job_dir(outside, 1).exists()
    assert not (tmp_path / "jobs").exists() and not (tmp_path / "checkpoints").exists()


def test_a_job_writing_outside_its_scope_is_refused_and_nothing_launched(
    runner: LocalProcessRunner, tmp_path: Path
) -> None:
    # The runner's data dir (job folders, checkpoints) is not under the write scope.
    scoped = spec("write-scoped").model_copy(
        update={"access": AccessScope(write=[str(tmp_path / "elsewhere")])}
    )
    with pytest.raises(ApplicationError) as denied:
        runner.run(scoped, attempt=1)
    assert denied.value.type == "AccessDenied" and denied.value.non_retryable
    assert str(runner.job_dir(scoped, 1)) in str(denied.value)
    assert "CampaignRequest.access.write" in str(denied.value)
    assert not (tmp_path / "jobs").exists()
    # The scope that holds the data dir lets the same job launch.
    allowed = scoped.model_copy(update={"access": AccessScope(write=[str(tmp_path)])})
    assert wait_for_job(runner, runner.run(allowed, attempt=1), "done").state == "succeeded"


def imported_size_bytes() -> int:
    """Virtual size of a job process once it has imported what it trains with."""
    code = (
        "import activities.job_entry, ranking_models.trainer\n"
        "print(open('/proc/self/status').read().split('VmSize:')[1].split()[0])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return int(out.stdout) * 1024


def test_an_allocation_past_the_jobs_memory_cap_fails_as_out_of_memory(tmp_path: Path) -> None:
    capped = LocalProcessRunner(
        tmp_path, "127.0.0.1:1", "default", memory_limit_bytes=imported_size_bytes() + 2**30
    )
    rows = {"max_table_rows": 8_000_000, "table_rows": {"item_id": 8_000_000}}
    job = capped.run(spec("big", embedding_dim=32, **rows), attempt=1)

    status = wait_for_job(capped, job, "done")

    assert status.result is not None and status.result.error_type == "OutOfMemoryError"
    assert "can't allocate memory" in status.result.error
    # Under the same cap, a model that fits trains.
    small = capped.run(spec("small", embedding_dim=8, **rows), attempt=1)
    assert wait_for_job(capped, small, "done").state == "succeeded"


def test_an_unexpected_error_is_a_failure_typed_by_its_class_with_the_traceback(
    runner: LocalProcessRunner, tmp_path: Path
) -> None:
    blocked = tmp_path / "checkpoints" / "campaign-jobs" / "blocked"
    blocked.parent.mkdir(parents=True)
    blocked.write_text("a file where the checkpoint folder goes")
    job = runner.run(spec("blocked"), attempt=1)

    status = wait_for_job(runner, job, "done")

    assert status.result is not None and status.result.state == "failed"
    assert status.result.error_type == "FileExistsError"
    assert "Traceback" in status.result.log_tail and "FileExistsError" in status.result.log_tail
