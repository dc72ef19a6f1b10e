"""The local backend: each trial runs as its own process on this host, holding no worker.

Besides the shared job folder (``folder.py``) a local job keeps:

    pid       the process id and start time, once launched
    log.txt   the job's stdout and stderr

The job signals its campaign when it ends (``job_finished``); ``poll`` reads the folder, so it
also answers for a job whose signal never came.
"""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from temporalio import activity

from activities import telemetry
from activities.backends import folder as jobs
from contracts import JobHandle, JobStatus, TrialSpec
from contracts.job import LOCAL_RUNNER as RUNNER


class LocalProcessRunner:
    """Runs trials as detached local processes: run, poll and stop over a JSON handle.

    Args:
        data_dir: Where job folders and checkpoints live.
        temporal_address: Where a finished job signals its campaign.
        namespace: The campaign's namespace.
        memory_limit_bytes: Cap on each job's address space (``RLIMIT_AS``): an allocation
            past it fails as out of memory in that job alone; None: no cap.
    """

    def __init__(
        self,
        data_dir: Path,
        temporal_address: str,
        namespace: str,
        memory_limit_bytes: int | None = None,
    ) -> None:
        # Absolute: the job runs from the project root, whatever the worker's directory.
        self._folders = jobs.JobFolders(
            data_dir.resolve(), temporal_address, namespace, memory_limit_bytes, RUNNER
        )

    def job_dir(self, spec: TrialSpec, attempt: int) -> Path:
        return self._folders.job_dir(spec, attempt)

    def run(self, spec: TrialSpec, attempt: int) -> JobHandle:
        """Launch the job, or return the one already launched for this attempt (idempotent).

        Raises:
            ApplicationError: ``AccessDenied`` (non-retryable) for data or files outside the
                trial's access scope; nothing is launched.
        """
        folder = self.job_dir(spec, attempt)
        pid_file = folder / "pid"
        if not pid_file.exists():
            self._folders.prepare(spec, attempt)
            # The job's spans join the launch's trace (TRACEPARENT), and its telemetry
            # settings (REA_*) are the worker's, data dir included.
            env = {
                **os.environ,
                "REA_DATA_DIR": str(self._folders.data_dir),
                **telemetry.trace_env(),
            }
            with (folder / "log.txt").open("ab") as log:
                # A session of its own: the job outlives the worker that launched it.
                process = subprocess.Popen(
                    [sys.executable, "-m", "activities.job_entry", str(folder)],
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                    cwd=jobs.PROJECT_ROOT,
                    env=env,
                )
            launched = {"pid": process.pid, "start_ticks": _start_ticks(process.pid)}
            jobs.write_json_atomically(pid_file, json.dumps(launched))
        return JobHandle(
            runner=RUNNER,
            job_id=jobs.job_id(spec, attempt),
            trial_id=spec.trial_id,
            attempt=attempt,
            details={"job_dir": str(folder), **json.loads(pid_file.read_text())},
        )

    def poll(self, job: JobHandle) -> JobStatus:
        """The job's state from its folder: finished (with result), running, or lost."""
        folder = Path(job.details["job_dir"])
        if result := jobs.read_result(folder):
            return JobStatus.ended(result)
        progress = jobs.read_progress(folder)
        if _alive(job):
            return JobStatus(state="running", progress=progress)
        # Re-check: the job may have written its result between the two looks.
        if (folder / "result.json").exists():
            return self.poll(job)
        return JobStatus(
            state="lost",
            progress=progress,
            message=f"job {job.job_id} exited without a result; see {folder / 'log.txt'}",
            error_type="JobLost",
            log_tail=jobs.log_tail(folder / "log.txt"),
        )

    def settle(self, job: JobHandle, timeout_s: float = 60.0) -> JobStatus:
        """A local job's final status is its folder's (it charges its own wall time)."""
        return self.poll(job)

    def stop(self, job: JobHandle, timeout_s: float = 600.0) -> JobStatus:
        """Ask the job to checkpoint and exit (SIGTERM), wait for it, and report its state."""
        pid = job.details["pid"]
        if _alive(job):
            os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        while _alive(job) and time.monotonic() < deadline:
            if activity.in_activity():
                activity.heartbeat()
            time.sleep(0.2)
        if _alive(job):
            os.kill(pid, signal.SIGKILL)
        return jobs.stopped(self.poll(job))


def _start_ticks(pid: int) -> int | None:
    """When ``pid`` started (clock ticks since boot), or None once it is gone or a zombie.

    Start time and pid together name one process: a later process reusing the pid differs.
    """
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    state, start = fields[0], int(fields[19])
    return None if state == "Z" else start


def _alive(job: JobHandle) -> bool:
    pid, started = job.details["pid"], job.details["start_ticks"]
    return _start_ticks(pid) == started
