"""Job backends: where a trial runs when it runs as its own job rather than in a worker.

Every backend speaks the same three verbs over a JSON ``JobHandle`` and answers with the same
``JobStatus`` states, so the campaign workflow never knows which one ran its trials:
``local.py`` (a process on the jobs worker's host, the default) and ``slurm.py`` (a Slurm
batch job submitted through TorchX). The jobs worker picks one from ``REA_JOB_BACKEND``.
"""

from pathlib import Path
from typing import Protocol

from contracts import JobHandle, JobStatus, TrialSpec
from settings import Settings


class JobRunner(Protocol):
    """Launches, polls and stops trials as jobs (every method idempotent)."""

    def job_dir(self, spec: TrialSpec, attempt: int) -> Path: ...

    def run(self, spec: TrialSpec, attempt: int) -> JobHandle: ...

    def poll(self, job: JobHandle) -> JobStatus: ...

    def stop(self, job: JobHandle, timeout_s: float = 600.0) -> JobStatus: ...

    def settle(self, job: JobHandle, timeout_s: float = 60.0) -> JobStatus: ...


def make_runner(settings: Settings) -> JobRunner:
    """The backend ``settings.job_backend`` names, configured from the settings."""
    limit = settings.job_memory_limit_gb
    memory_limit_bytes = int(limit * 2**30) if limit else None
    if settings.job_backend == "slurm":
        from activities.backends.slurm import SlurmRunner

        return SlurmRunner(
            settings.data_dir,
            settings.temporal_address,
            settings.namespace,
            partition=settings.slurm_partition,
            device_kind=settings.slurm_device,
            time_margin=settings.slurm_time_margin,
            min_time_minutes=settings.slurm_min_time_minutes,
            memory_limit_bytes=memory_limit_bytes,
            python=settings.slurm_python,
        )
    from activities.backends.local import LocalProcessRunner

    return LocalProcessRunner(
        settings.data_dir,
        settings.temporal_address,
        settings.namespace,
        memory_limit_bytes=memory_limit_bytes,
    )
