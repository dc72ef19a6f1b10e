"""A job's process: `python -m activities.job_entry JOB_DIR` (launched by a job backend).

Trains the trial in JOB_DIR/job.json (with checkpoints; through torchrun when it asks for
several devices), writes result.json, then signals the campaign. SIGTERM means stop: the
trainer checkpoints and the job reports itself cancelled. Under a scheduler a SIGTERM that
openrea did not ask for (no ``stop_requested`` file: a time limit, a preemption, someone's
scancel) checkpoints and exits 143 without a result, so that the scheduler's record says how
the job ended (and a requeued job runs on). If the signal cannot be sent, the campaign's
poll fallback reads result.json instead.

Every way the job can end is a result the runbooks can read: kernels that fail to load are a
``KernelUnavailableError``, an unexpected exception is a failure typed by its class with the
traceback as its log tail, and a ``memory_limit_bytes`` in job.json caps the process's
address space, so that an allocation past it fails as out of memory instead of taking the
host down.
"""

import asyncio
import json
import logging
import resource
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from opentelemetry import trace

import observability
from activities import telemetry
from activities.backends.folder import STOP_REQUESTED, write_json_atomically
from client import exit_without_finalizing, make_client
from contracts import JobFinishedInput, TrialProgress, TrialResult, TrialSpec
from contracts.job import SCHEDULER_RUNNERS
from ranking_models.errors import (
    DivergenceError,
    KernelUnavailableError,
    TrainingCancelled,
    TrainingError,
)
from settings import Settings

log = logging.getLogger("openrea.job")
tracer = trace.get_tracer("openrea.job")


def run_job(folder: Path) -> TrialResult | None:
    """Train the job's trial; its result, or None when its scheduler stopped it."""
    job = json.loads((folder / "job.json").read_text())
    spec = TrialSpec.model_validate(job["spec"])
    stop = _stop_on_sigterm(spec)
    started = time.monotonic()
    if limit := job.get("memory_limit_bytes"):
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    try:
        trainers = _import_trainers()
    except (ImportError, OSError) as err:
        return _write(folder, spec, started, _kernels_unavailable(spec, err))
    try:
        outcome = _train(folder, job, spec, stop, trainers)
    except TrainingCancelled:
        if job.get("runner") in SCHEDULER_RUNNERS and not (folder / STOP_REQUESTED).exists():
            # The scheduler's SIGTERM (time limit, preemption, someone's scancel): the
            # checkpoint is written; the scheduler's own record says how the job ended.
            return None
        result = _result(spec, state="cancelled", duration_s=time.monotonic() - started)
    except TrainingError as err:
        result = _result(
            spec,
            state="diverged" if isinstance(err, DivergenceError) else "failed",
            error=str(err),
            error_type=type(err).__name__,
        )
    except Exception as err:  # anything else: typed by its class, for the runbooks to read
        result = _unexpected_failure(spec, err)
    else:
        result = _result(
            spec,
            state="succeeded",
            validation=outcome.validation,
            test=outcome.test,
            steps=outcome.steps,
            # The distributed path does not checkpoint yet: it always starts fresh.
            resumed_from_step=getattr(outcome, "resumed_from_step", 0),
            duration_s=outcome.duration_s,
        )
    return _write(folder, spec, started, result)


def _stop_on_sigterm(spec: TrialSpec) -> threading.Event:
    """Installs the SIGTERM handler; returns the event it sets.

    The single-process trainer polls the event (``should_stop``), checkpoints and stops; a
    torchrun job has no cooperative stop, so the handler unwinds it at once.
    """
    stop = threading.Event()

    def on_sigterm(signum: int, frame: object) -> None:
        stop.set()  # the single-process trainer checkpoints at its next step and stops
        if spec.devices > 1:
            # torchrun has no cooperative stop: unwinding kills its process group.
            raise TrainingCancelled(0)

    signal.signal(signal.SIGTERM, on_sigterm)
    return stop


_Trainers = tuple[Callable[..., Any], Callable[..., Any]]


def _import_trainers() -> _Trainers:
    """``trainer.train`` and ``distributed.train_distributed``.

    Imported here, not at the top: compiled kernels that fail to load are this trial's
    typed failure (``KernelUnavailableError``), not a job that never starts.
    """
    from ranking_models.distributed import train_distributed
    from ranking_models.trainer import train

    return train, train_distributed


def _train(
    folder: Path, job: dict[str, Any], spec: TrialSpec, stop: threading.Event, trainers: _Trainers
) -> Any:
    """Trains in this process with checkpoints, or through torchrun on several devices."""
    train, train_distributed = trainers
    if spec.devices > 1:
        return train_distributed(spec.model, spec.dataset, nproc=spec.devices)

    def on_progress(progress: TrialProgress) -> None:
        write_json_atomically(folder / "progress.json", progress.model_dump_json())

    return train(
        spec.model,
        spec.dataset,
        on_progress=on_progress,
        should_stop=stop.is_set,
        checkpoint_dir=Path(job["checkpoint_dir"]),
        tensorboard_dir=Path(job["tensorboard_dir"]) if "tensorboard_dir" in job else None,
        data_fraction=spec.data_fraction,
    )


def _result(spec: TrialSpec, **fields: Any) -> TrialResult:
    return TrialResult(campaign_id=spec.campaign_id, trial_id=spec.trial_id, **fields)


def _kernels_unavailable(spec: TrialSpec, err: BaseException) -> TrialResult:
    """The failure of a host whose kernels do not load (call it while handling ``err``)."""
    return _result(
        spec,
        state="failed",
        error=str(KernelUnavailableError(f"kernels unavailable on this host: {err}")),
        error_type="KernelUnavailableError",
        log_tail=_tail(traceback.format_exc()),
    )


def _unexpected_failure(spec: TrialSpec, err: Exception) -> TrialResult:
    """A failure typed by the exception's class, with the traceback as its log tail (call
    it while handling ``err``)."""
    log.exception("trial %s failed unexpectedly", spec.trial_id)
    return _result(
        spec,
        state="failed",
        error=f"{type(err).__name__}: {err}",
        error_type=type(err).__name__,
        log_tail=_tail(traceback.format_exc()),
    )


def _write(folder: Path, spec: TrialSpec, started: float, result: TrialResult) -> TrialResult:
    """Charge the result its wall time and write result.json (atomically)."""
    duration = time.monotonic() - started
    result = result.model_copy(
        update={"duration_s": duration, "device_hours": duration * spec.devices / 3600}
    )
    write_json_atomically(folder / "result.json", result.model_dump_json())
    return result


def _tail(text: str, lines: int = 20) -> str:
    return "\n".join(text.rstrip().splitlines()[-lines:])


async def report(folder: Path, result: TrialResult | None) -> None:
    """Signal the campaign that the job ended: its result, or None when its scheduler stopped
    it (the campaign then asks the scheduler)."""
    job = json.loads((folder / "job.json").read_text())
    spec = TrialSpec.model_validate(job["spec"])
    # TLS and the API key (REA_TEMPORAL_TLS_*, REA_TEMPORAL_API_KEY) come from the environment
    # the job inherits from its jobs worker, as every other REA_* setting not in job.json.
    settings = Settings(temporal_address=job["temporal_address"], namespace=job["namespace"])
    client = await make_client(settings)
    handle = client.get_workflow_handle(spec.campaign_id)
    await handle.signal(
        "job_finished",
        JobFinishedInput(trial_id=spec.trial_id, job_id=job["job_id"], result=result),
    )


def main() -> None:
    logging.basicConfig(level=logging.INFO)
    folder = Path(sys.argv[1])
    # REA_* telemetry settings and the data dir come from the launching worker's environment.
    observability.setup(Settings())
    spec = TrialSpec.model_validate(json.loads((folder / "job.json").read_text())["spec"])
    # A child of the launch_job activity's span when the worker handed over TRACEPARENT.
    with tracer.start_as_current_span(
        "job", context=telemetry.context_from_env(), attributes=telemetry.trial_attributes(spec)
    ):
        result = run_job(folder)
        if result is not None:
            telemetry.end_trial(spec, result)
        else:
            log.warning("stopped by the scheduler: checkpointed; its record says how it ended")
    try:
        asyncio.run(report(folder, result))
    except Exception:  # the campaign's poll fallback will find out
        log.exception("could not signal the campaign; it will find out when it polls")
    exit_without_finalizing(0 if result is not None else 128 + signal.SIGTERM)


if __name__ == "__main__":
    main()
