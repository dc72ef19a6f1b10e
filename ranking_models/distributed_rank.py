"""One process of a distributed training run: what every rank of a torchrun job does.

``train_rank`` is called under ``torchrun`` by ``ranking_models.distributed_main``, which
``distributed.train_distributed`` launches:

- The model is sharded table-wise over the ranks with fused embedding kernels, starting
  from the single-process model's seeded rows (see ``ranking_models.sharding``).
- Dense parts are data-parallel: ``DistributedModelParallel`` wraps them in DDP, which
  averages their gradients; TorchRec divides the embedding gradients by the world size
  on their way back, so both see the gradient of the global batch's mean loss.
- Every rank draws the same shuffle from ``model.seed``, cuts it into global batches of
  ``batch_size`` rows and trains on its own slice of each (about ``batch_size / world``
  rows), so a step covers the same examples as a single-process step. (A last global
  batch with fewer rows than ranks is dropped.) Streaming splits are read by random
  access for this, which is correct but slow: fine for tests, not yet for Criteo scale.
  Each step is the trainer's ``TrainStep``, its loss reduced to the mean over ranks.
- Dropout masks are seeded per rank; BatchNorm statistics are averaged over ranks
  before evaluation.
- Validation and test rows are scored in slices by every rank (a forward pass is a
  collective) and gathered on rank 0, which computes the trainer's metrics.

Process group: NCCL when CUDA is available, else Gloo.
"""

import os
import time
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torchrec.distributed.model_parallel import DistributedModelParallel
from torchrec.optim.optimizers import in_backward_optimizer_filter

from contracts import DatasetRef, Metrics, ModelSpec
from ranking_models.data import FeatureSchema, Split
from ranking_models.datasets import check_data, load_dataset
from ranking_models.distributed import DistributedOutcome, check_spec
from ranking_models.dlrm import build_model, dropout_modules
from ranking_models.errors import DivergenceError
from ranking_models.metrics import compute_metrics
from ranking_models.optim import dense_optimizer
from ranking_models.sharding import (
    FusedOptimizerRate,
    TablePlacement,
    average_batch_norm_stats,
    gather_local_tables,
    shard,
)
from ranking_models.train_step import DivergenceMonitor, TrainStep
from ranking_models.trainer import EVAL_BATCH_SIZE


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
    """``train_rank`` within the process group: load, shard, train, score."""
    data = load_dataset(dataset, max_table_rows=model.max_table_rows)
    check_data(data)
    dmp, plan = _build(model, data.schema, device)
    local_tables = gather_local_tables(dmp)
    optimizer = dense_optimizer(
        model, [p for _, p in in_backward_optimizer_filter(dmp.named_parameters())]
    )
    steps, train_loss = _train_epochs(model, dmp, optimizer, data.train.to(device), device)
    average_batch_norm_stats(dmp)
    validation = _evaluate(dmp, data.validation.to(device), steps)
    test = _evaluate(dmp, data.test.to(device), steps)
    if dist.get_rank() != 0:
        return None
    assert validation is not None and test is not None
    return DistributedOutcome(
        validation=validation,
        test=test,
        steps=steps,
        duration_s=time.perf_counter() - started,
        train_loss=train_loss,
        world_size=dist.get_world_size(),
        backend=backend,
        plan=plan,
        local_tables=local_tables,
    )


def _build(
    model: ModelSpec, schema: FeatureSchema, device: torch.device
) -> tuple[DistributedModelParallel, dict[str, TablePlacement]]:
    """The spec's model, sharded over the ranks; every rank must call it."""
    # Built on CPU on every rank from the spec's seed: identical everywhere, and the
    # tables' seeded rows are copied into the shards.
    net = build_model(model, schema, embeddings="torchrec")
    for dropout in dropout_modules(net):
        dropout.seed += dist.get_rank()  # each rank's slice of a batch gets its own masks
    return shard(model, net, device, dist.get_world_size())


def _train_epochs(
    model: ModelSpec,
    dmp: DistributedModelParallel,
    optimizer: torch.optim.Optimizer,
    train_split: Split,
    device: torch.device,
) -> tuple[int, float]:
    """Trains every epoch on this rank's slices of the global batches.

    Returns:
        The steps taken and the last epoch's mean loss (each step's averaged over ranks).
    """
    rank, world = dist.get_rank(), dist.get_world_size()
    generator = torch.Generator().manual_seed(model.seed)
    batches = global_batches(len(train_split), model.batch_size, world)
    train_step = TrainStep(
        model,
        dmp,  # DDP averages the dense gradients in backward; the tables update in it
        optimizer,
        [FusedOptimizerRate(dmp.fused_optimizer)],
        DivergenceMonitor(),  # the trainer's defaults, without its base-rate floor
        total_steps=model.epochs * len(batches),
        # The loss averaged over ranks: every rank's monitor raises at the same step
        # instead of one leaving the others waiting in a collective.
        reduce=_mean_over_ranks,
    )
    step, epoch_loss = 0, 0.0
    for _ in range(model.epochs):
        dmp.train()
        epoch_loss = 0.0
        order = torch.randperm(len(train_split), generator=generator)
        for global_batch in batches:
            rows = order[global_batch].tensor_split(world)[rank]
            epoch_loss += train_step(train_split.batch(rows.to(device)), step=step)
            step += 1
    return step, epoch_loss / len(batches)


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
