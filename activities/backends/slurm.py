"""The Slurm backend: each trial is one Slurm batch job, submitted through TorchX.

TorchX (PyTorch's job launcher) turns the trial into an ``AppDef`` and its Slurm scheduler
writes and submits the ``sbatch`` script; the same AppDef reaches Kubernetes, Ray or AWS
Batch through TorchX's other schedulers. Three gaps of TorchX 0.7.0 are handled here:

- Its ``describe`` asserts on the state ``CANCELLED by 0`` that ``sacct`` prints for a
  cancelled job, and its states lose what a trial needs (timeout vs node failure vs exit
  code), so status comes from our own ``sacct`` query (``-D``: every run of a requeued job,
  each with its steps, whose ExitCode tells a step killed by a signal).
- Its status carries no exit code: ``sacct`` gives ``ExitCode`` and the charge (elapsed time
  times the cores or GPUs allocated, summed over requeued runs).
- ``schedule`` with a ``job_dir`` appends to ``./.torchxslurmjobdirs`` in the worker's
  directory; we pass ``--chdir`` to sbatch ourselves, so the logs land in the job folder
  and nothing is written beside the worker.

Stopping sends SIGTERM to the job's step (``scancel --signal=TERM``): the trainer checkpoints,
writes a cancelled result and exits; ``scancel`` ends a job that does not (or is pending).
Slurm requeues a preempted job or one whose node failed (TorchX submits with ``--requeue``):
it runs again in the same folder and resumes from its checkpoint.

Besides the shared job folder (``folder.py``) a Slurm job keeps ``slurm_job_id`` (written
right after sbatch answers), sbatch's own ``slurm-<id>.out`` and the trainer's
``slurm-<id>-<role>-0.out/.err``.
"""

import hashlib
import math
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities import telemetry
from activities.backends import folder as jobs
from contracts import JobHandle, JobStatus, TrialSpec
from contracts.job import JobState

RUNNER = "slurm"

# Slurm states in which the job still may run: the trial waits on.
ACTIVE = {
    "PENDING",
    "RUNNING",
    "REQUEUED",
    "REQUEUE_HOLD",
    "REQUEUE_FED",
    "RESIZING",
    "SUSPENDED",
    "CONFIGURING",
    "COMPLETING",
    "SIGNALING",
    "STAGE_OUT",
    "STOPPED",
    "RESV_DEL_HOLD",
}

# Active states of a job on its way out: a stop leaves it to end on its own (cancelling it
# now would record a job that exited cleanly as CANCELLED).
ENDING = {"COMPLETING", "SIGNALING", "STAGE_OUT"}

# A job that ended without writing its result: the job state every backend shares and the
# error type the runbooks match (``JobLost`` resumes from the checkpoint). FAILED is refined
# by how it failed (``status_of``). A job that wrote its result is that result, whatever
# Slurm says.
ENDED_WITHOUT_RESULT: dict[str, tuple[JobState, str]] = {
    "COMPLETED": ("lost", "JobLost"),  # exited 0 but wrote nothing
    "FAILED": ("failed", "JobFailed"),  # a non-zero exit code
    "CANCELLED": ("cancelled", ""),  # scancel by someone else
    "TIMEOUT": ("failed", "JobTimeout"),
    "DEADLINE": ("failed", "JobTimeout"),
    "NODE_FAIL": ("lost", "JobLost"),
    "BOOT_FAIL": ("lost", "JobLost"),
    "PREEMPTED": ("lost", "JobLost"),  # preempted without requeue
    "REVOKED": ("lost", "JobLost"),  # moved to another cluster of a federation
    "OUT_OF_MEMORY": ("failed", "OutOfMemoryError"),
    "SPECIAL_EXIT": ("failed", "JobFailed"),
}

# How often stop() repeats its SIGTERM while the job runs on.
RESIGNAL_S = 5.0

SACCT_FIELDS = "JobID,State,ExitCode,DerivedExitCode,ElapsedRaw,AllocTRES,Partition"


@dataclass(frozen=True)
class SlurmRecord:
    """What Slurm knows of one job (the last of its runs when it was requeued).

    Attributes:
        slurm_id: Slurm's job id.
        state: The state's first word (``CANCELLED`` of ``CANCELLED by 0``).
        raw_state: The state as sacct printed it.
        exit_code: The batch script's exit code.
        signal: The signal that killed the job's step (0: none).
        elapsed_s: Seconds run, summed over every run of a requeued job.
        device_seconds: Elapsed seconds times the GPUs (or else cores) held, summed.
        partition: Where it ran.
    """

    slurm_id: str
    state: str
    raw_state: str = ""
    exit_code: int = 0
    signal: int = 0
    elapsed_s: int = 0
    device_seconds: int = 0
    partition: str = ""


def parse_sacct(text: str) -> SlurmRecord | None:
    """``sacct -D -P -n -o SACCT_FIELDS`` output: a line per run of the job (the last one
    current), each followed by its steps' lines (``<id>.batch``, ``<id>.0``...).

    A step killed by a signal shows it in its own ExitCode (``0:9``); the job's
    DerivedExitCode says it too, but is sometimes recorded after the job's end, so both are
    read.
    """
    rows = [line.split("|") for line in text.splitlines() if line.strip()]
    runs = [row for row in rows if "." not in row[0]]
    if not runs:
        return None
    last_steps = rows[rows.index(runs[-1]) + 1 :]
    elapsed = device_seconds = 0
    for row in runs:
        run_s = int(row[4] or 0)
        elapsed += run_s
        device_seconds += run_s * allocated_devices(row[5])
    job_id, raw_state, exit_code, derived, _, _, partition = runs[-1][:7]
    code, _, sig = exit_code.partition(":")
    signals = [sig, derived.partition(":")[2], *(s[2].partition(":")[2] for s in last_steps)]
    return SlurmRecord(
        slurm_id=job_id,
        state=raw_state.split()[0] if raw_state else "",
        raw_state=raw_state,
        exit_code=int(code or 0),
        signal=max(int(s or 0) for s in signals),
        elapsed_s=elapsed,
        device_seconds=device_seconds,
        partition=partition,
    )


def allocated_devices(alloc_tres: str) -> int:
    """GPUs held if any, else cores: ``billing=2,cpu=2,gres/gpu=1,node=1`` -> 1."""
    tres = dict(item.split("=", 1) for item in alloc_tres.split(",") if "=" in item)
    for key in ("gres/gpu", "cpu"):
        if key in tres:
            return int(tres[key])
    return 1


def status_of(record: SlurmRecord) -> tuple[JobState, str, str]:
    """The job state, error type and message of a job that ended without a result."""
    base = f"Slurm job {record.slurm_id} {record.raw_state}"
    if record.state == "FAILED" and record.signal:
        # Killed from outside (SIGKILL, the OOM killer): the checkpoint survives.
        return "lost", "JobLost", f"{base}: killed by signal {record.signal}"
    if record.state == "FAILED":
        return "failed", "JobFailed", f"{base} with exit code {record.exit_code}"
    if record.state == "COMPLETED":
        return "lost", "JobLost", f"{base} (exit code 0) without writing a result"
    if record.state == "CANCELLED":
        return "cancelled", "", f"{base}: cancelled outside openrea (scancel)"
    state, error_type = ENDED_WITHOUT_RESULT.get(record.state, ("failed", "JobFailed"))
    return state, error_type, base


class SlurmRunner:
    """Runs trials as Slurm batch jobs: run, poll and stop over a JSON handle.

    Args:
        data_dir: Where job folders and checkpoints live (shared with the cluster's nodes).
        temporal_address: Where a finished job signals its campaign.
        namespace: The campaign's namespace.
        partition: The partition jobs go to; empty: the cluster's default.
        device_kind: What one of a trial's devices is on this cluster: a core or a GPU.
        time_margin: The time limit is the trial's estimated wall time times this.
        min_time_minutes: The time limit is never below this.
        memory_limit_bytes: Memory each job asks for (``--mem``); None: the default.
        python: The interpreter on the cluster's nodes, with openrea installed; empty: the
            worker's own (a shared filesystem or the same image on every node).
    """

    def __init__(
        self,
        data_dir: Path,
        temporal_address: str,
        namespace: str,
        partition: str = "",
        device_kind: Literal["cpu", "gpu"] = "cpu",
        time_margin: float = 2.0,
        min_time_minutes: float = 10,
        memory_limit_bytes: int | None = None,
        python: str = "",
    ) -> None:
        from torchx.schedulers.slurm_scheduler import create_scheduler

        self._folders = jobs.JobFolders(
            data_dir.resolve(), temporal_address, namespace, memory_limit_bytes, RUNNER
        )
        self._partition = partition
        self._device_kind = device_kind
        self._time_margin = time_margin
        self._min_time_minutes = min_time_minutes
        self._python = python or sys.executable
        self._scheduler = create_scheduler("openrea")

    def job_dir(self, spec: TrialSpec, attempt: int) -> Path:
        return self._folders.job_dir(spec, attempt)

    def time_limit_s(self, spec: TrialSpec) -> int:
        """The trial's estimated wall time with the margin, in whole minutes (at least the
        minimum), as seconds."""
        wall_minutes = spec.estimated_device_hours / spec.devices * 60
        minutes = math.ceil(wall_minutes * self._time_margin)
        return max(math.ceil(self._min_time_minutes * 60), minutes * 60)

    def run(self, spec: TrialSpec, attempt: int) -> JobHandle:
        """Submit the job, or return the one already submitted for this attempt (idempotent:
        a launch retried after a crash between sbatch and writing the id finds its job by
        name rather than submitting a second one).

        Raises:
            ApplicationError: ``AccessDenied`` (non-retryable) for data or files outside the
                trial's access scope; ``SlurmUnavailable`` when sbatch fails (retried).
        """
        folder = self.job_dir(spec, attempt)
        id_file = folder / "slurm_job_id"
        name = job_name(spec, attempt)
        if not id_file.exists():
            self._folders.prepare(spec, attempt)
            # TorchX names the job after its role and replica: ``<role>-0``.
            slurm_id = self._find(f"{name}-0") or self._submit(spec, folder, name)
            jobs.write_json_atomically(id_file, slurm_id)
        return JobHandle(
            runner=RUNNER,
            job_id=jobs.job_id(spec, attempt),
            trial_id=spec.trial_id,
            attempt=attempt,
            details={
                "job_dir": str(folder),
                "slurm_job_id": id_file.read_text().strip(),
                "job_name": name,
                "partition": self._partition,
                "time_limit_s": self.time_limit_s(spec),
            },
        )

    def poll(self, job: JobHandle) -> JobStatus:
        """The job's state from Slurm's accounting and its folder.

        A job that wrote its result is that result once Slurm has accounted it (charged what
        Slurm accounted); one that ended without a result is mapped by ``status_of``; one
        Slurm no longer knows at all is lost (relaunched from its checkpoint).
        """
        folder = Path(job.details["job_dir"])
        slurm_id = job.details["slurm_job_id"]
        record = self.query(slurm_id)
        progress = jobs.read_progress(folder)
        if record is None:
            return JobStatus(
                state="lost",
                progress=progress,
                message=f"Slurm job {slurm_id} vanished from the queue and the accounting",
                error_type="JobLost",
                log_tail=self.log_tail(job),
            )
        if record.state in ACTIVE:
            return JobStatus(state="running", progress=progress, scheduler_state=record.state)
        charged = record.device_seconds / 3600
        if result := jobs.read_result(folder):
            ended = JobStatus.ended(result.model_copy(update={"device_hours": charged}))
            return ended.model_copy(
                update={"scheduler_state": record.raw_state, "device_hours": charged}
            )
        state, error_type, message = status_of(record)
        return JobStatus(
            state=state,
            progress=progress,
            message=message,
            error_type=error_type,
            log_tail=self.log_tail(job),
            scheduler_state=record.raw_state,
            device_hours=charged,
        )

    def stop(self, job: JobHandle, timeout_s: float = 600.0) -> JobStatus:
        """Ask the job to checkpoint and exit (SIGTERM to its step), wait for it, cancel it
        outright if it does not end, and report its state.

        The signal is sent again every few seconds: a job whose step had not started yet
        when it was first sent (sbatch's script still starting srun) gets it then.
        """
        slurm_id = job.details["slurm_job_id"]
        (Path(job.details["job_dir"]) / jobs.STOP_REQUESTED).touch()
        signalled = -RESIGNAL_S

        def ask_to_stop(record: SlurmRecord) -> None:
            nonlocal signalled
            if time.monotonic() - signalled < RESIGNAL_S:
                return
            if record.state == "RUNNING":
                _slurm(["scancel", "--signal=TERM", slurm_id], check=False)
            elif record.state not in ENDING:  # pending or suspended: no trainer to checkpoint
                _slurm(["scancel", slurm_id], check=False)
            signalled = time.monotonic()

        if not self._wait_ended(job, timeout_s, while_active=ask_to_stop):
            _slurm(["scancel", slurm_id], check=False)
            self._wait_ended(job, 60)
        return jobs.stopped(self.poll(job))

    def settle(self, job: JobHandle, timeout_s: float = 60.0) -> JobStatus:
        """The status once Slurm has a final record of a job that said it ended (it exits
        right after its signal). A job Slurm requeued is running again; one Slurm has not
        accounted after ``timeout_s`` stands on its own result and charge."""
        if self._wait_ended(job, timeout_s):
            return self.poll(job)
        status = self.poll(job)
        result = jobs.read_result(Path(job.details["job_dir"]))
        if result is None:
            return status
        return JobStatus.ended(result).model_copy(
            update={"message": "Slurm had not accounted the job yet: charged its own wall time"}
        )

    def query(self, slurm_id: str) -> SlurmRecord | None:
        """Slurm's record of the job: accounting first, the controller's queue for a job
        the accounting has not recorded yet; None when neither knows it.

        A job that has just ended leaves the queue before slurmdbd records it (a job that
        failed at once read as lost, and a lost job is relaunched): the controller still
        knows it for ``MinJobAge`` (``squeue -t all``), so until the accounting has it, it
        reads as completing, and its charge and exit code come from the accounting.
        """
        out = _slurm(["sacct", "-D", "-P", "-n", "-j", slurm_id, "-o", SACCT_FIELDS])
        if record := parse_sacct(out):
            return record
        queued = _slurm(
            ["squeue", "-h", "-j", slurm_id, "-t", "all", "-o", "%T"], check=False
        ).strip()
        if not queued:
            return None
        state = queued if queued in ACTIVE else "COMPLETING"
        return SlurmRecord(slurm_id=slurm_id, state=state, raw_state=queued)

    def log_tail(self, job: JobHandle, lines: int = 20) -> str:
        """The end of the trainer's stderr, then its stdout (Slurm writes them apart)."""
        folder, slurm_id = Path(job.details["job_dir"]), job.details["slurm_job_id"]
        parts = []
        for stream in ("err", "out"):
            for path in sorted(folder.glob(f"slurm-{slurm_id}-*.{stream}")):
                if tail := jobs.log_tail(path, lines):
                    parts.append(f"--- {path.name}\n{tail}")
        return "\n".join(parts)

    # ---- internals ---------------------------------------------------------------------------

    def _submit(self, spec: TrialSpec, folder: Path, name: str) -> str:
        from torchx import specs

        devices = spec.devices
        role = specs.Role(
            name=name,
            image="",
            entrypoint=self._python,
            args=["-m", "activities.job_entry", str(folder)],
            # The job's spans join the launch's trace; it imports openrea from the project.
            env={
                "REA_DATA_DIR": str(self._folders.data_dir),
                "PYTHONPATH": str(jobs.PROJECT_ROOT),
                # One thread per allocated core: each device is one process on one core.
                **({"OMP_NUM_THREADS": "1"} if self._device_kind == "cpu" else {}),
                **telemetry.trace_env(),
            },
            resource=specs.Resource(
                cpu=devices,
                gpu=devices if self._device_kind == "gpu" else 0,
                memMB=(self._folders.memory_limit_bytes or 0) // 2**20,
            ),
        )
        app = specs.AppDef(name=name, roles=[role])
        cfg: dict[str, str] = {
            "time": "{}:{:02d}".format(*divmod(self.time_limit_s(spec), 60)),  # minutes:seconds
            "comment": f"openrea {spec.campaign_id} {spec.trial_id}",
        }
        if self._partition:
            cfg["partition"] = self._partition
        dryrun = self._scheduler.submit_dryrun(app, cfg)  # type: ignore[arg-type]
        # --chdir instead of TorchX's job_dir (see the module's docstring).
        dryrun.request.cmd.append(f"--chdir={folder}")
        try:
            return str(self._scheduler.schedule(dryrun)).strip()
        except subprocess.CalledProcessError as err:
            raise ApplicationError(
                f"sbatch failed for {spec.trial_id} (exit {err.returncode}); is Slurm up and "
                "SLURM_CONF set on the jobs worker?",
                type="SlurmUnavailable",
            ) from err

    def _find(self, name: str) -> str:
        """The id of a job already submitted under ``name`` (the newest), or ''."""
        out = _slurm(["sacct", "-X", "-P", "-n", "--name", name, "-S", "now-2days", "-o", "JobID"])
        ids = [line.strip() for line in out.splitlines() if line.strip()]
        if not ids:
            queued = _slurm(["squeue", "-h", "--name", name, "-o", "%i"], check=False)
            ids = [line.strip() for line in queued.splitlines() if line.strip()]
        return ids[-1] if ids else ""

    def _wait_ended(
        self,
        job: JobHandle,
        timeout_s: float,
        while_active: Callable[[SlurmRecord], None] | None = None,
    ) -> bool:
        """Whether Slurm's record of the job ended within ``timeout_s`` (heartbeating);
        ``while_active`` is called with each record that has not."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            record = self.query(job.details["slurm_job_id"])
            if record is None or record.state not in ACTIVE:
                return True
            if while_active is not None:
                while_active(record)
            if activity.in_activity():
                activity.heartbeat()
            time.sleep(0.5)
        return False


def job_name(spec: TrialSpec, attempt: int) -> str:
    """Slurm's job name: readable in squeue, unique per campaign, trial and attempt."""
    campaign = hashlib.sha1(spec.campaign_id.encode()).hexdigest()[:8]
    return f"rea-{campaign}-{spec.trial_id}-a{attempt}"


def _slurm(cmd: list[str], check: bool = True) -> str:
    """A Slurm command's stdout; a failure is retried by Temporal as ``SlurmUnavailable``."""
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    if check and done.returncode != 0:
        raise ApplicationError(
            f"{' '.join(cmd[:2])} failed: {done.stderr.strip()}", type="SlurmUnavailable"
        )
    return done.stdout
