"""The job folder every backend shares: what to run, where it reports, where it checkpoints.

    <data_dir>/jobs/<campaign>/<trial>/attempt-<n>/
        job.json       what to run and where to report (written before the launch)
        progress.json  the trainer's last progress report
        result.json    the TrialResult, written atomically when the job ends
        ...            the backend's own files: its handle, the job's logs
    <data_dir>/checkpoints/<campaign>/<trial>/   shared by the attempts, so a relaunch resumes

The folder is keyed by (campaign, trial, attempt), so any worker finds a job again after a
restart. With Slurm, the data dir must be on a filesystem the cluster's nodes share.
"""

import json
import os
from dataclasses import dataclass
from pathlib import Path

from activities import access, telemetry
from contracts import JobStatus, TrialProgress, TrialResult, TrialSpec

# Where jobs run ``python -m activities.job_entry`` from.
PROJECT_ROOT = Path(__file__).resolve().parents[2]


def write_json_atomically(path: Path, text: str) -> None:
    """Write ``text`` so that a reader sees the old file or the new one, never half of it."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def checkpoint_dir(data_dir: Path, spec: TrialSpec) -> Path:
    return data_dir / "checkpoints" / spec.campaign_id / spec.trial_id


def job_dir(data_dir: Path, spec: TrialSpec, attempt: int) -> Path:
    return data_dir / "jobs" / spec.campaign_id / spec.trial_id / f"attempt-{attempt}"


def job_id(spec: TrialSpec, attempt: int) -> str:
    """openrea's id of one launch: the job reports under it, so stale reports are told apart."""
    return f"{spec.campaign_id}/{spec.trial_id}/{attempt}"


# Written by a backend before it asks its job to stop: the job's SIGTERM is openrea's (it
# reports itself cancelled), not its scheduler's (time limit, preemption, someone's scancel).
STOP_REQUESTED = "stop_requested"


@dataclass(frozen=True)
class JobFolders:
    """The job folders under one data dir, and what every job launched there is told.

    Both backends hold one: the folder's layout and the job.json written before a launch are
    the same whichever scheduler runs the job.

    Attributes:
        data_dir: Where job folders and checkpoints live (absolute: jobs run from the project
            root, whatever the worker's directory).
        temporal_address: Where a finished job signals its campaign.
        namespace: The campaign's namespace.
        memory_limit_bytes: The job's memory cap, each backend enforcing it its own way;
            None: no cap.
        runner: The backend's name, as a ``JobHandle`` records it.
    """

    data_dir: Path
    temporal_address: str
    namespace: str
    memory_limit_bytes: int | None
    runner: str

    def job_dir(self, spec: TrialSpec, attempt: int) -> Path:
        return job_dir(self.data_dir, spec, attempt)

    def prepare(self, spec: TrialSpec, attempt: int) -> Path:
        """Check the trial's access scope and write its job.json; returns the job's folder.

        Raises:
            ApplicationError: ``AccessDenied`` (non-retryable) for data or files outside the
                trial's access scope; nothing is written.
        """
        folder = self.job_dir(spec, attempt)
        checkpoints = checkpoint_dir(self.data_dir, spec)
        access.check_read(spec.access, spec.dataset)
        for path in (folder, checkpoints):
            access.check_write(spec.access, path, self.data_dir)
        folder.mkdir(parents=True, exist_ok=True)
        job = {
            "spec": spec.model_dump(mode="json"),
            "job_id": job_id(spec, attempt),
            "checkpoint_dir": str(checkpoints),
            "tensorboard_dir": str(telemetry.tensorboard_dir(self.data_dir, spec)),
            "temporal_address": self.temporal_address,
            "namespace": self.namespace,
            "memory_limit_bytes": self.memory_limit_bytes,
            "runner": self.runner,
        }
        write_json_atomically(folder / "job.json", json.dumps(job, indent=1))
        return folder


def read_result(folder: Path) -> TrialResult | None:
    """The job's result, once it has written one."""
    path = folder / "result.json"
    return TrialResult.model_validate_json(path.read_text()) if path.exists() else None


def read_progress(folder: Path) -> TrialProgress | None:
    path = folder / "progress.json"
    return TrialProgress.model_validate_json(path.read_text()) if path.exists() else None


def log_tail(path: Path, lines: int = 20, max_bytes: int = 8192) -> str:
    """The last ``lines`` lines of a job's log (read from its end: logs can be large)."""
    try:
        with path.open("rb") as log:
            log.seek(max(0, path.stat().st_size - max_bytes))
            text = log.read().decode("utf-8", errors="replace")
    except OSError:
        return ""
    return "\n".join(text.rstrip().splitlines()[-lines:])


def stopped(status: JobStatus) -> JobStatus:
    """A stopped job's final status: one that left no result was still stopped on purpose."""
    return status if status.state != "lost" else status.model_copy(update={"state": "cancelled"})
