"""Trains one ``ModelSpec`` across processes with TorchRec's ``DistributedModelParallel``.

One process per device, started by ``torchrun`` (``ranking_models.distributed_main``):

- The DLRM is built with TorchRec's own ``EmbeddingBagCollection`` (our
  ``kernels.FusedEmbeddingBagCollection`` is not a module TorchRec's sharders know), from
  the same seeded rows and dense layers as the single-process model.
- Embedding tables are sharded table-wise: each table lives whole on one rank, tables
  spread over the ranks by size (``table_plan``). Lookups travel by all-to-all. Chosen
  because every table here fits on one rank and table-wise moves the least data; row-wise
  (needed once a table outgrows a rank) also runs on CPU with Gloo in these versions.
- Tables use TorchRec's ``fused`` compute kernel (FBGEMM's TBE with the optimizer applied
  in backward). ``fbgemm-gpu-cpu`` has CPU kernels for exact row-wise Adagrad and exact
  SGD, so those run fused on CPU too. It has no Adam kernel (see ``kernels.tbe``), so
  ``sparse_optimizer="adam"`` is rejected on CPU (FBGEMM's CUDA build has all three).
- Dense parts are data-parallel: ``DistributedModelParallel`` wraps them in DDP, which
  averages their gradients; TorchRec divides the embedding gradients by the world size
  on their way back, so both see the gradient of the global batch's mean loss.
- Every rank draws the same shuffle from ``model.seed``, cuts it into global batches of
  ``batch_size`` rows and trains on its own slice of each (about ``batch_size / world``
  rows), so a step covers the same examples as a single-process step. (A last global
  batch with fewer rows than ranks is dropped.) Streaming splits are read by random
  access for this, which is correct but slow: fine for tests, not yet for Criteo scale.
- Dropout masks are seeded per rank; BatchNorm statistics are per rank during training
  and averaged over ranks before evaluation (no SyncBatchNorm).
- Validation and test rows are scored in slices by every rank (a forward pass is a
  collective) and gathered on rank 0, which computes the trainer's metrics.

Not here yet (unlike ``trainer.train``): checkpoints and resume, progress reports and
cancellation; Adam for embeddings on CPU.

Process group: NCCL when CUDA is available, else Gloo.
"""

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.distributed.optim import _apply_optimizer_in_backward
from torchrec.distributed.embeddingbag import EmbeddingBagCollectionSharder
from torchrec.distributed.model_parallel import DistributedModelParallel
from torchrec.distributed.sharding_plan import construct_module_sharding_plan, table_wise
from torchrec.distributed.types import ShardingEnv, ShardingPlan
from torchrec.modules.embedding_configs import EmbeddingBagConfig
from torchrec.modules.embedding_modules import EmbeddingBagCollection
from torchrec.optim import RowWiseAdagrad
from torchrec.optim.optimizers import in_backward_optimizer_filter

from contracts import DatasetRef, Metrics, ModelSpec
from ranking_models.checkpoint import LoopState
from ranking_models.data import Split
from ranking_models.dlrm import SPARSE_EPS, build_model, dropout_modules
from ranking_models.errors import (
    BadDataError,
    BadSpecError,
    DivergenceError,
    OutOfMemoryError,
    TrainingError,
)
from ranking_models.metrics import compute_metrics
from ranking_models.optim import dense_optimizer, lr_factor
from ranking_models.trainer import (
    EVAL_BATCH_SIZE,
    _check_divergence,
    check_data,
    load_dataset,
)

# trainer.train's defaults.
DIVERGENCE_FACTOR = 10.0
DIVERGENCE_PATIENCE = 20

# TorchRec's compute kernel names (EmbeddingComputeKernel values).
FUSED = "fused"

_SPARSE_OPTIMIZER: dict[str, type[torch.optim.Optimizer]] = {
    "rowwise_adagrad": RowWiseAdagrad,
    "sgd": torch.optim.SGD,
    "adam": torch.optim.Adam,
}


@dataclass(frozen=True)
class TablePlacement:
    """Where one embedding table lives.

    Attributes:
        sharding_type: TorchRec's sharding type, e.g. ``table_wise``.
        compute_kernel: TorchRec's compute kernel, e.g. ``fused``.
        ranks: The ranks holding a shard of the table.
    """

    sharding_type: str
    compute_kernel: str
    ranks: tuple[int, ...]


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


def table_plan(tables: list[EmbeddingBagConfig], world_size: int) -> dict[str, int]:
    """Table-wise placement: each table to one rank, balancing rows times dim.

    Largest tables first, each to the rank holding the fewest elements so far (ties to
    the lowest rank), so with at least ``world_size`` tables every rank holds one.

    Args:
        tables: The tables to place.
        world_size: Number of ranks.

    Returns:
        Table name to rank.
    """
    load = [0] * world_size
    placement: dict[str, int] = {}
    for t in sorted(tables, key=lambda t: (-t.num_embeddings * t.embedding_dim, t.name)):
        rank = min(range(world_size), key=lambda r: (load[r], r))
        placement[t.name] = rank
        load[rank] += t.num_embeddings * t.embedding_dim
    return placement


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


def global_batches(num_rows: int, batch_size: int, world_size: int) -> list[slice]:
    """The global batches of an epoch, as ranges of the epoch's shuffled order.

    The last, short batch is dropped when it has fewer rows than ranks (some rank would
    get an empty batch, which the sharded lookup cannot take).
    """
    return [
        slice(start, start + batch_size)
        for start in range(0, num_rows, batch_size)
        if min(batch_size, num_rows - start) >= world_size
    ]


def train_rank(model: ModelSpec, dataset: DatasetRef) -> DistributedOutcome | None:
    """Runs this process's share of a distributed run (call under ``torchrun``).

    Reads ``RANK``, ``LOCAL_RANK`` and ``WORLD_SIZE`` from the environment, joins the
    process group (NCCL on CUDA, Gloo on CPU) and leaves it when done or failed.

    Args:
        model: The model and how to train it; ``batch_size`` is the global batch.
        dataset: The data; every rank loads it and reads its own slice of each batch.

    Returns:
        On rank 0 the outcome; None on the other ranks.

    Raises:
        BadSpecError, BadDataError, DivergenceError, OutOfMemoryError: As ``trainer.train``;
            every rank raises the same error.
    """
    started = time.perf_counter()
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if torch.cuda.is_available():
        device, backend = torch.device("cuda", local_rank), "nccl"
        torch.cuda.set_device(device)
    else:
        device, backend = torch.device("cpu"), "gloo"
    check_spec(model, device, int(os.environ.get("WORLD_SIZE", "1")))
    dist.init_process_group(backend=backend)
    try:
        return _train(model, dataset, device, backend, started)
    finally:
        dist.destroy_process_group()


def _train(
    model: ModelSpec,
    dataset: DatasetRef,
    device: torch.device,
    backend: str,
    started: float,
) -> DistributedOutcome | None:
    rank, world = dist.get_rank(), dist.get_world_size()
    data = load_dataset(dataset, max_table_rows=model.max_table_rows)
    check_data(data)
    # Built on CPU on every rank from the spec's seed: identical everywhere, and the
    # tables' seeded rows are copied into the shards below.
    net = build_model(model, data.schema, embeddings="torchrec")
    for dropout in dropout_modules(net):
        dropout.seed += rank  # each rank's slice of a batch gets its own masks
    initial_rows = {
        name: bag.weight.detach().clone()
        for ebc in _collections(net)
        for name, bag in ebc.embedding_bags.items()
    }
    dmp, plan = _shard(model, net, device, world)
    _load_rows(dmp, initial_rows)
    local_tables = _gather_local_tables(dmp)

    optimizer = dense_optimizer(
        model, [p for _, p in in_backward_optimizer_filter(dmp.named_parameters())]
    )
    train_split = data.train.to(device)
    generator = torch.Generator().manual_seed(model.seed)
    batches = global_batches(len(train_split), model.batch_size, world)
    steps_per_epoch = len(batches)
    total_steps = model.epochs * steps_per_epoch
    loop = LoopState(step=0, epoch_generator_state=generator.get_state())
    epoch_loss = 0.0
    for _ in range(model.epochs):
        dmp.train()
        epoch_loss = 0.0
        order = torch.randperm(len(train_split), generator=generator)
        for global_batch in batches:
            rows = order[global_batch].tensor_split(world)[rank]
            batch = train_split.batch(rows.to(device))
            factor = lr_factor(model, loop.step, total_steps)
            for group in optimizer.param_groups:
                group["lr"] = model.dense_lr * factor
            for group in dmp.fused_optimizer.param_groups:
                group["lr"] = model.sparse_lr * factor
            dmp.fused_optimizer.step()  # only hands the new rate to the fused kernels
            logits = dmp(batch.dense, batch.sparse).squeeze(1)  # (B / world,)
            loss = F.binary_cross_entropy_with_logits(logits, batch.labels)
            value = _mean_over_ranks(loss.detach())
            # The trainer's monitor, on the loss averaged over ranks: every rank raises at
            # the same step instead of one leaving the others waiting in a collective.
            _check_divergence(loop, value, DIVERGENCE_FACTOR, DIVERGENCE_PATIENCE)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()  # DDP averages dense gradients; tables update in backward
            if model.grad_clip_norm > 0.0:
                nn.utils.clip_grad_norm_(
                    [p for group in optimizer.param_groups for p in group["params"]],
                    model.grad_clip_norm,
                )
            optimizer.step()
            loop.step += 1
            epoch_loss += value
    _average_batch_norm_stats(dmp)
    validation = _evaluate(dmp, data.validation.to(device), loop.step)
    test = _evaluate(dmp, data.test.to(device), loop.step)
    if rank != 0:
        return None
    assert validation is not None and test is not None
    return DistributedOutcome(
        validation=validation,
        test=test,
        steps=loop.step,
        duration_s=time.perf_counter() - started,
        train_loss=epoch_loss / steps_per_epoch,
        world_size=world,
        backend=backend,
        plan=plan,
        local_tables=local_tables,
    )


def _collections(net: nn.Module) -> list[EmbeddingBagCollection]:
    return [m for m in net.modules() if isinstance(m, EmbeddingBagCollection)]


def _shard(
    model: ModelSpec, net: nn.Module, device: torch.device, world: int
) -> tuple[DistributedModelParallel, dict[str, TablePlacement]]:
    """Wraps ``net`` in DMP with the fused sparse optimizer and a table-wise plan."""
    plans = {}
    placements: dict[str, TablePlacement] = {}
    for path, ebc in net.named_modules():
        if not isinstance(ebc, EmbeddingBagCollection):
            continue
        _apply_optimizer_in_backward(
            _SPARSE_OPTIMIZER[model.sparse_optimizer],
            ebc.parameters(),
            {"lr": model.sparse_lr, "eps": SPARSE_EPS}
            if model.sparse_optimizer != "sgd"
            else {"lr": model.sparse_lr},
        )
        ranks = table_plan(ebc.embedding_bag_configs(), world)
        plans[path] = construct_module_sharding_plan(
            ebc,
            # No ``device=``: table_wise() then places CPU tables on rank 0 whatever
            # ``rank`` says (TorchRec's inference placement helper).
            {name: table_wise(rank=r, compute_kernel=FUSED) for name, r in ranks.items()},
            local_size=world,
            world_size=world,
            device_type=device.type,
        )
        for name, module_plan in plans[path].items():
            placements[name] = TablePlacement(
                sharding_type=module_plan.sharding_type,
                compute_kernel=module_plan.compute_kernel,
                ranks=tuple(module_plan.ranks or ()),
            )
    # Nearest rounding, as in kernels.tbe: fp16 tables train deterministically.
    sharder = EmbeddingBagCollectionSharder(fused_params={"stochastic_rounding": False})
    dmp = DistributedModelParallel(
        net,
        env=ShardingEnv.from_process_group(dist.group.WORLD),
        device=device,
        plan=ShardingPlan(plans),
        sharders=[sharder],  # type: ignore[list-item]
    )
    return dmp, placements


def _sharded_tables(dmp: nn.Module) -> Iterator[tuple[str, Any]]:
    """(table name, ShardedTensor) for every embedding table in ``dmp``'s state."""
    for key, value in dmp.state_dict().items():
        if key.endswith(".weight") and hasattr(value, "local_shards"):
            yield key.split(".")[-2], value


def _load_rows(dmp: nn.Module, rows: dict[str, torch.Tensor]) -> None:
    """Copies each table's initial rows into this rank's shards of it.

    Sharding on CPU re-initialises the tables from TorchRec's ``init_fn``; this puts
    back the seeded rows the single-process model starts from.
    """
    with torch.no_grad():
        for name, sharded in _sharded_tables(dmp):
            for shard in sharded.local_shards():
                (r0, c0), (nr, nc) = shard.metadata.shard_offsets, shard.metadata.shard_sizes
                source = rows[name][r0 : r0 + nr, c0 : c0 + nc]
                shard.tensor.copy_(source.to(shard.tensor.dtype))


def _gather_local_tables(dmp: nn.Module) -> dict[int, tuple[str, ...]]:
    """Rank to the tables it holds shards of, as every rank sees itself after sharding."""
    mine = tuple(sorted(name for name, s in _sharded_tables(dmp) if s.local_shards()))
    every: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(every, mine)
    return dict(enumerate(every))


def _average_batch_norm_stats(dmp: nn.Module) -> None:
    """Averages BatchNorm running statistics over ranks before evaluation.

    Each rank's statistics come from its own slices of the batches (DDP does not sync
    buffers here), and every rank scores part of the evaluation rows, so without this
    a row's score would depend on which rank scored it.
    """
    world = dist.get_world_size()
    for module in dmp.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            for stat in (module.running_mean, module.running_var):
                if stat is not None:
                    dist.all_reduce(stat)
                    stat.div_(world)


def _mean_over_ranks(value: torch.Tensor) -> float:
    total = value.reshape(1).clone()
    dist.all_reduce(total)
    return total.item() / dist.get_world_size()


def _evaluate(dmp: nn.Module, split: Split, step: int) -> Metrics | None:
    """Metrics of ``split`` on rank 0 (None elsewhere); every rank must call it.

    Each rank scores a contiguous slice of the rows in the same number of batches (a
    forward pass is a collective), and rank 0 concatenates the logits in rank order.
    """
    rank, world = dist.get_rank(), dist.get_world_size()
    mine = torch.arange(len(split)).tensor_split(world)[rank]
    num_batches = max(1, -(-len(mine) // max(1, EVAL_BATCH_SIZE // world)))
    dmp.eval()
    parts = []
    with torch.no_grad():
        for rows in mine.tensor_split(num_batches):
            batch = split.batch(rows.to(split.labels.device))
            parts.append(dmp(batch.dense, batch.sparse).squeeze(1).cpu())  # (B,)
    every: list[Any] = [None] * world
    dist.all_gather_object(every, torch.cat(parts))
    if rank != 0:
        return None
    logits = torch.cat(every)
    if not torch.isfinite(logits).all():
        raise DivergenceError(step, float("nan"))
    return compute_metrics(split.labels.cpu(), logits)


# --- launching -------------------------------------------------------------------------

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
