"""The local-process runner: each trial runs as its own process, holding no worker.

A job lives in its own folder, keyed by (campaign, trial, attempt), so that any worker can
find it again after a restart:

    <data_dir>/jobs/<campaign>/<trial>/attempt-<n>/
        job.json       what to run and where to report (written before the launch)
        pid            the process id and start time, once launched
        progress.json  the trainer's last progress report
        result.json    the TrialResult, written atomically when the job ends
        log.txt        the job's stdout and stderr
    <data_dir>/checkpoints/<campaign>/<trial>/   shared by the attempts, so a relaunch resumes

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

from opentelemetry import trace
from temporalio import activity

from activities import access, telemetry
from contracts import JobHandle, JobStatus, LaunchJobInput, TrialProgress, TrialResult, TrialSpec

RUNNER = "local-process"


def write_json_atomically(path: Path, text: str) -> None:
    """Write ``text`` so that a reader sees the old file or the new one, never half of it."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def checkpoint_dir(data_dir: Path, spec: TrialSpec) -> Path:
    return data_dir / "checkpoints" / spec.campaign_id / spec.trial_id


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
        self._data_dir = data_dir.resolve()
        self._address = temporal_address
        self._namespace = namespace
        self._memory_limit_bytes = memory_limit_bytes

    def job_dir(self, spec: TrialSpec, attempt: int) -> Path:
        return self._data_dir / "jobs" / spec.campaign_id / spec.trial_id / f"attempt-{attempt}"

    def run(self, spec: TrialSpec, attempt: int) -> JobHandle:
        """Launch the job, or return the one already launched for this attempt (idempotent).

        Raises:
            ApplicationError: ``AccessDenied`` (non-retryable) for data or files outside the
                trial's access scope; nothing is launched.
        """
        folder = self.job_dir(spec, attempt)
        access.check_read(spec.access, spec.dataset)
        for path in (folder, checkpoint_dir(self._data_dir, spec)):
            access.check_write(spec.access, path, self._data_dir)
        pid_file = folder / "pid"
        if not pid_file.exists():
            folder.mkdir(parents=True, exist_ok=True)
            job = {
                "spec": spec.model_dump(mode="json"),
                "job_id": f"{spec.campaign_id}/{spec.trial_id}/{attempt}",
                "checkpoint_dir": str(checkpoint_dir(self._data_dir, spec)),
                "tensorboard_dir": str(telemetry.tensorboard_dir(self._data_dir, spec)),
                "temporal_address": self._address,
                "namespace": self._namespace,
                "memory_limit_bytes": self._memory_limit_bytes,
            }
            write_json_atomically(folder / "job.json", json.dumps(job, indent=1))
            # The job's spans join the launch's trace (TRACEPARENT), and its telemetry
            # settings (REA_*) are the worker's, data dir included.
            env = {**os.environ, "REA_DATA_DIR": str(self._data_dir), **telemetry.trace_env()}
            with (folder / "log.txt").open("ab") as log:
                # A session of its own: the job outlives the worker that launched it.
                process = subprocess.Popen(
                    [sys.executable, "-m", "activities.job_entry", str(folder)],
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                    cwd=Path(__file__).resolve().parent.parent,
                    env=env,
                )
            launched = {"pid": process.pid, "start_ticks": _start_ticks(process.pid)}
            write_json_atomically(pid_file, json.dumps(launched))
        return JobHandle(
            runner=RUNNER,
            job_id=f"{spec.campaign_id}/{spec.trial_id}/{attempt}",
            trial_id=spec.trial_id,
            attempt=attempt,
            details={"job_dir": str(folder), **json.loads(pid_file.read_text())},
        )

    def poll(self, job: JobHandle) -> JobStatus:
        """The job's state from its folder: finished (with result), running, or lost."""
        folder = Path(job.details["job_dir"])
        result_file = folder / "result.json"
        if result_file.exists():
            result = TrialResult.model_validate_json(result_file.read_text())
            return JobStatus.ended(result)
        progress = None
        if (folder / "progress.json").exists():
            progress = TrialProgress.model_validate_json((folder / "progress.json").read_text())
        if _alive(job):
            return JobStatus(state="running", progress=progress)
        # Re-check: the job may have written its result between the two looks.
        if result_file.exists():
            return self.poll(job)
        return JobStatus(
            state="lost",
            progress=progress,
            message=f"job {job.job_id} exited without a result; see {folder / 'log.txt'}",
            log_tail=log_tail(folder / "log.txt"),
        )

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
        status = self.poll(job)
        return (
            status if status.state != "lost" else status.model_copy(update={"state": "cancelled"})
        )


def log_tail(path: Path, lines: int = 20, max_bytes: int = 8192) -> str:
    """The last ``lines`` lines of a job's log (read from its end: logs can be large)."""
    try:
        with path.open("rb") as log:
            log.seek(max(0, path.stat().st_size - max_bytes))
            text = log.read().decode("utf-8", errors="replace")
    except OSError:
        return ""
    return "\n".join(text.rstrip().splitlines()[-lines:])


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


class JobActivities:
    """launch_job / poll_job / stop_job over an injected runner."""

    def __init__(self, runner: LocalProcessRunner) -> None:
        self._runner = runner

    @activity.defn(name="launch_job")
    def launch_job(self, inp: LaunchJobInput) -> JobHandle:
        """Launch a trial as an external job (idempotent per campaign, trial and attempt)."""
        telemetry.record_queue_latency()
        telemetry.start_trial(inp.spec)
        return self._runner.run(inp.spec, inp.attempt)

    @activity.defn(name="poll_job")
    def poll_job(self, job: JobHandle) -> JobStatus:
        """Where a job stands; the fallback for a job that never signalled."""
        telemetry.record_queue_latency()
        status = self._runner.poll(job)
        span = trace.get_current_span()
        span.set_attributes({"rea.trial_id": job.trial_id, "rea.job_state": status.state})
        if status.result is not None:
            span.set_attributes(telemetry.result_attributes(status.result))
        return status

    @activity.defn(name="stop_job")
    def stop_job(self, job: JobHandle) -> JobStatus:
        """Stop a job: it checkpoints and exits; reports its final state."""
        return self._runner.stop(job)
