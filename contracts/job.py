"""Training jobs launched outside the worker: a JSON handle and what polling it tells."""

from typing import Any, Literal

from pydantic import Field

from contracts.base import Record
from contracts.trial import TrialProgress, TrialResult, TrialSpec

# What a scheduler can say about a job. "lost": the job is gone without a result (the host
# rebooted, the process was killed): only the poll fallback can notice that.
JobState = Literal["running", "succeeded", "failed", "cancelled", "lost"]

# The local backend's name in handles.
LOCAL_RUNNER = "local-process"
# Backends whose jobs are charged what their scheduler accounted (and whose final state the
# scheduler knows): the campaign settles such a job with its backend once it reports. Jobs of
# other backends (local processes) charge their own wall time.
SCHEDULER_RUNNERS = frozenset({"slurm"})


class JobHandle(Record):
    """Enough to find a job again from any worker, after any restart.

    Attributes:
        runner: Which backend launched it (``local-process``, ``slurm``).
        job_id: The runner's id for the job.
        trial_id: The trial it trains.
        attempt: 1 for the first launch; a relaunch resumes from the job's checkpoint.
        details: Runner-specific JSON (pid, log and result paths...).
    """

    runner: str
    job_id: str
    trial_id: str
    attempt: int = 1
    details: dict[str, Any] = Field(default_factory=dict)


class JobStatus(Record):
    """What polling a job tells: its state, progress and, once finished, its result.

    Attributes:
        state: Where the job stands, the same for every backend.
        progress: The trainer's last progress report.
        result: What the job wrote when it ended (None: it ended without one, or runs on).
        message: Why it ended so, in words (Slurm's state and exit code...).
        error_type: The failure's type for the runbooks when the job left no result
            (``JobLost``: resume from the checkpoint; ``JobTimeout``, ``JobFailed``...).
        log_tail: The end of the job's stdout and stderr.
        scheduler_state: The backend's own word for the state (Slurm's ``PENDING``...).
        device_hours: What the scheduler accounted for the job (elapsed time times the
            devices or cores it held); None: the backend keeps no accounts.
    """

    state: JobState
    progress: TrialProgress | None = None
    result: TrialResult | None = None
    message: str = ""
    error_type: str = ""
    log_tail: str = ""
    scheduler_state: str = ""
    device_hours: float | None = None

    @classmethod
    def ended(cls, result: TrialResult) -> "JobStatus":
        """The status of a job that wrote ``result``: a trial that diverged or was pruned
        still ran its job to the end (the trial's state says how it went)."""
        state: JobState = "succeeded"
        if result.state in ("failed", "cancelled"):
            state = result.state
        return cls(state=state, result=result)


class LaunchJobInput(Record):
    """Input of the ``launch_job`` activity: the trial, and which launch of it this is."""

    spec: TrialSpec
    attempt: int = 1


class JobFinishedInput(Record):
    """The ``job_finished`` signal a job sends its campaign when it ends.

    ``result`` is None when its scheduler stopped it (a time limit, a preemption, someone's
    scancel): the campaign then asks the scheduler how the job ended, at once rather than at
    its next fallback poll.
    """

    trial_id: str
    job_id: str
    result: TrialResult | None = None
