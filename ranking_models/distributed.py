"""Trains one ``ModelSpec`` across processes with TorchRec's ``DistributedModelParallel``.

``train_distributed`` launches ``torchrun`` with one process per device; each process
(``ranking_models.distributed_main``) runs ``distributed_rank.train_rank``, which shards
the tables over the ranks (``ranking_models.sharding``) and trains the dense parts
data-parallel, each step the trainer's ``TrainStep``. Rank 0 writes the outcome as JSON
(``DistributedOutcome``); a rank that fails with a typed error writes it beside
(``error_to_json``), and the caller gets the same error back.

Sparse Adam has no fused FBGEMM kernel on CPU, so ``sparse_optimizer="adam"`` is rejected
there before launching (FBGEMM's CUDA build has all three optimizers).

Not here yet (unlike ``trainer.train``): checkpoints and resume, progress reports and
cancellation; Adam for embeddings on CPU.
"""

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from contracts import DatasetRef, Metrics, ModelSpec
from ranking_models.errors import (
    BadDataError,
    BadSpecError,
    DivergenceError,
    OutOfMemoryError,
    TrainingError,
)
from ranking_models.sharding import TablePlacement


@dataclass(frozen=True)
class DistributedOutcome:
    """What one multi-process training run produced (reported by rank 0).

    Attributes:
        validation: Metrics on the validation split.
        test: Metrics on the test split.
        steps: Optimizer steps taken (each over one global batch).
        duration_s: Wall time of rank 0's run, data loading included.
        train_loss: Mean training loss over the last epoch (averaged over ranks).
        world_size: Number of processes.
        backend: The process group's backend, ``gloo`` or ``nccl``.
        plan: Table name to its planned placement.
        local_tables: Rank to the tables it actually holds shards of after sharding.
    """

    validation: Metrics
    test: Metrics
    steps: int
    duration_s: float
    train_loss: float
    world_size: int
    backend: str
    plan: dict[str, TablePlacement]
    local_tables: dict[int, tuple[str, ...]]

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (what ``distributed_main`` writes)."""
        return {
            "validation": self.validation.model_dump(),
            "test": self.test.model_dump(),
            "steps": self.steps,
            "duration_s": self.duration_s,
            "train_loss": self.train_loss,
            "world_size": self.world_size,
            "backend": self.backend,
            "plan": {
                name: {
                    "sharding_type": p.sharding_type,
                    "compute_kernel": p.compute_kernel,
                    "ranks": list(p.ranks),
                }
                for name, p in self.plan.items()
            },
            "local_tables": {str(r): list(t) for r, t in self.local_tables.items()},
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "DistributedOutcome":
        """The outcome ``to_json`` wrote."""
        return cls(
            validation=Metrics.model_validate(data["validation"]),
            test=Metrics.model_validate(data["test"]),
            steps=data["steps"],
            duration_s=data["duration_s"],
            train_loss=data["train_loss"],
            world_size=data["world_size"],
            backend=data["backend"],
            plan={
                name: TablePlacement(p["sharding_type"], p["compute_kernel"], tuple(p["ranks"]))
                for name, p in data["plan"].items()
            },
            local_tables={int(r): tuple(t) for r, t in data["local_tables"].items()},
        )


class DistributedRunError(TrainingError):
    """The torchrun job failed without a typed error (a crash, a hang, a timeout).

    Retryable: a crashed or stuck process group may well succeed on a second try.
    """

    retryable = True


def check_spec(model: ModelSpec, device: torch.device, world_size: int) -> None:
    """Rejects specs the distributed path cannot train on ``device`` with ``world_size``.

    Raises:
        BadSpecError: Adam on CPU (``fbgemm-gpu-cpu`` has no fused Adam kernel), or a
            global batch too small to give every rank a row.
    """
    if model.sparse_optimizer == "adam" and device.type == "cpu":
        raise BadSpecError(
            "sparse_optimizer",
            "adam has no fused FBGEMM kernel on CPU, so distributed CPU training cannot "
            "use it; use rowwise_adagrad or sgd, or train on CUDA or in one process",
        )
    if model.batch_size < world_size:
        raise BadSpecError(
            "batch_size",
            f"{model.batch_size} is the global batch and cannot be split over "
            f"{world_size} processes; use at least {world_size}",
        )


_ERRORS: dict[str, type[TrainingError]] = {
    "BadDataError": BadDataError,
    "OutOfMemoryError": OutOfMemoryError,
}


def rank_error_path(out: Path, rank: int | str) -> Path:
    """Where a rank writes the typed error it failed with, beside the result file."""
    return out.with_name(f"{out.stem}.rank{rank}.error.json")


def error_to_json(error: TrainingError) -> dict[str, Any]:
    """A typed training error as JSON, for rank 0 to hand back to ``train_distributed``."""
    out: dict[str, Any] = {"error_type": type(error).__name__, "message": str(error)}
    if isinstance(error, BadSpecError):
        out["field"] = error.field
    if isinstance(error, DivergenceError):
        out |= {"step": error.step, "loss": error.loss, "reason": error.reason}
    return out


def error_from_json(data: dict[str, Any]) -> TrainingError:
    """The typed error ``error_to_json`` wrote (``DistributedRunError`` if unknown)."""
    kind, message = data["error_type"], data["message"]
    if kind == "BadSpecError":
        prefix = f"ModelSpec.{data['field']}: "
        return BadSpecError(data["field"], message.removeprefix(prefix))
    if kind == "DivergenceError":
        return DivergenceError(data["step"], data["loss"], data["reason"])
    return _ERRORS.get(kind, DistributedRunError)(message)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def torchrun_command(spec_path: Path, out_path: Path, nproc: int, port: int) -> list[str]:
    """The torchrun command line for one single-node run of ``nproc`` processes."""
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nnodes",
        "1",
        "--nproc-per-node",
        str(nproc),
        "--master-addr",
        "127.0.0.1",
        "--master-port",
        str(port),
        "-m",
        "ranking_models.distributed_main",
        "--spec",
        str(spec_path),
        "--out",
        str(out_path),
    ]


def train_distributed(
    model: ModelSpec, dataset: DatasetRef, nproc: int, *, timeout_s: float = 3600.0
) -> DistributedOutcome:
    """Trains ``model`` in ``nproc`` processes launched by torchrun, and waits.

    Args:
        model: The model and how to train it; ``batch_size`` is the global batch.
        dataset: The data.
        nproc: Processes (one per GPU on CUDA hosts).
        timeout_s: The whole job is killed after this many seconds.

    Returns:
        Rank 0's outcome.

    Raises:
        BadSpecError: The spec cannot be trained this way (checked before launching).
        BadSpecError, BadDataError, DivergenceError, OutOfMemoryError: A rank raised it.
        DistributedRunError: The job crashed, failed otherwise or timed out.
    """
    if nproc < 1:
        raise ValueError(f"nproc must be >= 1, got {nproc}")
    # Fails fast here; the ranks check again on their own devices.
    check_spec(model, torch.device("cuda" if torch.cuda.is_available() else "cpu"), nproc)
    with tempfile.TemporaryDirectory(prefix="rea-dist-") as tmp:
        spec_path, out_path = Path(tmp, "spec.json"), Path(tmp, "result.json")
        spec_path.write_text(
            json.dumps({"model": model.model_dump(), "dataset": dataset.model_dump()})
        )
        env = dict(os.environ)
        # torchrun sets 1 thread per process (with a warning) when unset; share the cores.
        env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // nproc)))
        command = torchrun_command(spec_path, out_path, nproc, free_port())
        with _process_group(command, env) as process:
            try:
                _, stderr = process.communicate(timeout=timeout_s)
            except subprocess.TimeoutExpired as e:
                raise DistributedRunError(
                    f"distributed training did not finish within {timeout_s:.0f} s"
                ) from e
        result = json.loads(out_path.read_text()) if out_path.exists() else None
        errors = sorted(Path(tmp).glob(rank_error_path(out_path, "*").name))
        if result is None and errors:  # the first rank's typed error, in rank order
            result = json.loads(errors[0].read_text())
    if result is not None and "error_type" in result:
        raise error_from_json(result)
    if process.returncode != 0 or result is None:
        raise DistributedRunError(f"torchrun exited with {process.returncode}: {stderr[-4000:]}")
    return DistributedOutcome.from_json(result)


@contextmanager
def _process_group(command: list[str], env: dict[str, str]) -> Iterator[subprocess.Popen[str]]:
    """Starts ``command`` in its own session; kills that session if still running after."""
    process = subprocess.Popen(
        command,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        yield process
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)  # torchrun and its workers
            process.wait()
