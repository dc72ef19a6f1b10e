"""Slurm's records mapped to trial outcomes (no cluster needed: sacct's output as text)."""

from pathlib import Path

import pytest

from activities.backends.slurm import (
    ACTIVE,
    ENDED_WITHOUT_RESULT,
    SlurmRecord,
    SlurmRunner,
    allocated_devices,
    parse_sacct,
    status_of,
)
from contracts import DatasetRef, ModelSpec, TrialSpec


def test_a_cancelled_state_with_its_uid_is_read_as_cancelled() -> None:
    record = parse_sacct("41|CANCELLED by 0|0:0|0:15|12|billing=1,cpu=1,node=1|debug\n")

    assert record == SlurmRecord(
        slurm_id="41",
        state="CANCELLED",
        raw_state="CANCELLED by 0",
        signal=15,
        elapsed_s=12,
        device_seconds=12,
        partition="debug",
    )
    assert status_of(record)[:2] == ("cancelled", "")


def test_every_run_of_a_requeued_job_is_charged_and_the_last_one_decides() -> None:
    out = (
        "7|REQUEUED|0:0|0:0|100|billing=2,cpu=2,node=1|gpu\n"
        "7|COMPLETED|0:0|0:0|50|billing=1,cpu=8,gres/gpu=1,node=1|gpu\n"
    )
    record = parse_sacct(out)

    assert record is not None and record.state == "COMPLETED"
    assert record.elapsed_s == 150 and record.device_seconds == 100 * 2 + 50 * 1


def test_a_step_killed_by_a_signal_is_read_from_the_step_when_the_job_does_not_say() -> None:
    # The job's DerivedExitCode may be recorded after its end: the step's line says it.
    out = (
        "9|FAILED|9:0|0:0|7|billing=1,cpu=1,node=1|debug\n"
        "9.batch|FAILED|9:0||7|cpu=1,mem=0,node=1|\n"
        "9.0|CANCELLED|0:9||7|cpu=1,mem=0,node=1|\n"
    )
    record = parse_sacct(out)

    assert record is not None and record.slurm_id == "9" and record.signal == 9
    assert status_of(record)[:2] == ("lost", "JobLost")


def test_steps_of_an_earlier_run_do_not_count_for_the_last_one() -> None:
    out = (
        "5|REQUEUED|0:0|0:0|30|cpu=1|debug\n"
        "5.0|CANCELLED|0:15||30|cpu=1|\n"
        "5|FAILED|3:0|3:0|10|cpu=1|debug\n"
        "5.0|FAILED|3:0||10|cpu=1|\n"
    )
    record = parse_sacct(out)

    assert record is not None and (record.state, record.signal, record.exit_code) == (
        "FAILED",
        0,
        3,
    )
    assert record.elapsed_s == 40  # both runs charged, not their steps


def test_nothing_in_the_accounting_is_no_record() -> None:
    assert parse_sacct("") is None and parse_sacct("\n") is None


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        # sacct -D -P -n -o JobID,State,ExitCode,DerivedExitCode,ElapsedRaw,AllocTRES,Partition
        ("1|FAILED|3:0|3:0|5|cpu=1|debug", ("failed", "JobFailed", "exit code 3")),
        ("1|FAILED|9:0|0:9|5|cpu=1|debug", ("lost", "JobLost", "killed by signal 9")),
        ("1|COMPLETED|0:0|0:0|5|cpu=1|debug", ("lost", "JobLost", "without writing a result")),
        ("1|TIMEOUT|0:0|0:0|60|cpu=1|debug", ("failed", "JobTimeout", "TIMEOUT")),
        ("1|NODE_FAIL|0:0|0:0|5|cpu=1|debug", ("lost", "JobLost", "NODE_FAIL")),
        ("1|PREEMPTED|0:0|0:0|5|cpu=1|debug", ("lost", "JobLost", "PREEMPTED")),
        ("1|BOOT_FAIL|0:0|0:0|0|cpu=1|debug", ("lost", "JobLost", "BOOT_FAIL")),
        ("1|OUT_OF_MEMORY|0:125|0:0|5|cpu=1|debug", ("failed", "OutOfMemoryError", "MEMORY")),
        ("1|DEADLINE|0:0|0:0|0|cpu=1|debug", ("failed", "JobTimeout", "DEADLINE")),
        ("1|SOMETHING_NEW|0:0|0:0|0|cpu=1|debug", ("failed", "JobFailed", "SOMETHING_NEW")),
    ],
)
def test_a_job_ended_without_a_result_maps_to_a_trial_outcome(
    line: str, expected: tuple[str, str, str]
) -> None:
    record = parse_sacct(line)
    assert record is not None

    state, error_type, message = status_of(record)

    assert (state, error_type) == expected[:2] and expected[2] in message


def test_waiting_and_ended_states_do_not_overlap() -> None:
    assert not ACTIVE & set(ENDED_WITHOUT_RESULT)
    assert {"PENDING", "RUNNING", "REQUEUED", "SUSPENDED", "COMPLETING"} <= ACTIVE


@pytest.mark.parametrize(
    ("tres", "devices"),
    [("billing=2,cpu=2,node=1", 2), ("billing=8,cpu=8,gres/gpu=2,node=1", 2), ("", 1)],
)
def test_the_charge_counts_gpus_when_held_else_cores(tres: str, devices: int) -> None:
    assert allocated_devices(tres) == devices


def test_the_time_limit_is_the_estimate_with_its_margin_in_whole_minutes(tmp_path: Path) -> None:
    runner = SlurmRunner(tmp_path, "127.0.0.1:1", "default", time_margin=2.0, min_time_minutes=10)
    hour = TrialSpec(
        campaign_id="c",
        trial_id="t",
        phase="baseline",
        model=ModelSpec(),
        dataset=DatasetRef(),
        estimated_device_hours=1.0,
        devices=2,
    )

    assert runner.time_limit_s(hour) == 60 * 60  # 30 minutes of wall time on 2 devices, twice
    assert runner.time_limit_s(hour.model_copy(update={"estimated_device_hours": 0.01})) == 600
