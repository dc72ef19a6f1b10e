"""Polling a job backend until a job has trained a little or has ended (backend tests)."""

import time
from typing import Literal

from activities.backends import JobRunner
from contracts import JobHandle, JobStatus


def wait_for_job(
    runner: JobRunner,
    job: JobHandle,
    until: Literal["done", "training"],
    timeout_s: float = 90,
) -> JobStatus:
    """Poll until the job ends, or (``until="training"``) until it has reported progress."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        status = runner.poll(job)
        if status.state != "running" or (until == "training" and status.progress):
            return status
        time.sleep(0.2)
    raise AssertionError(f"job {job.job_id} still running after {timeout_s}s")
