"""How a DLRM's embedding tables are laid out over the ranks of a distributed run.

TorchRec's ``DistributedModelParallel`` (DMP) does the work; this module chooses and
records the layout, and keeps the sharded model starting from the single-process one:

- The model is built with TorchRec's own ``EmbeddingBagCollection`` (our
  ``kernels.FusedEmbeddingBagCollection`` is not a module TorchRec's sharders know), from
  the same seeded rows and dense layers as the single-process model; ``shard`` copies the
  seeded rows into the shards after sharding re-initialised them.
- Tables are sharded table-wise: each table lives whole on one rank, tables spread over
  the ranks by size (``table_plan``). Lookups travel by all-to-all. Chosen because every
  table here fits on one rank and table-wise moves the least data; row-wise (needed once
  a table outgrows a rank) also runs on CPU with Gloo in these versions.
- Tables use TorchRec's ``fused`` compute kernel (FBGEMM's TBE with the optimizer applied
  in backward). ``fbgemm-gpu-cpu`` has CPU kernels for exact row-wise Adagrad and exact
  SGD, so those run fused on CPU too; it has no Adam kernel (see ``kernels.tbe``).
- BatchNorm statistics are per rank during training and averaged over ranks before
  evaluation (``average_batch_norm_stats``; no SyncBatchNorm).
"""

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.optim import _apply_optimizer_in_backward
from torchrec.distributed.embeddingbag import EmbeddingBagCollectionSharder
from torchrec.distributed.model_parallel import DistributedModelParallel
from torchrec.distributed.sharding_plan import construct_module_sharding_plan, table_wise
from torchrec.distributed.types import ShardingEnv, ShardingPlan
from torchrec.modules.embedding_configs import EmbeddingBagConfig
from torchrec.modules.embedding_modules import EmbeddingBagCollection
from torchrec.optim import RowWiseAdagrad

from contracts import ModelSpec
from ranking_models.dlrm import SPARSE_EPS

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


def shard(
    model: ModelSpec, net: nn.Module, device: torch.device, world: int
) -> tuple[DistributedModelParallel, dict[str, TablePlacement]]:
    """Wraps ``net`` in DMP with the fused sparse optimizer and a table-wise plan.

    Every rank must call it (sharding is collective), with the same ``net``.

    Args:
        model: The spec (``sparse_optimizer``, ``sparse_lr``).
        net: A model from ``build_model(..., embeddings="torchrec")``, on CPU.
        device: This rank's device.
        world: Number of ranks.

    Returns:
        The sharded model, its tables holding ``net``'s rows, and each table's placement.
    """
    rows = {
        name: bag.weight.detach().clone()
        for ebc in _collections(net)
        for name, bag in ebc.embedding_bags.items()
    }
    plans, placements = _module_plans(model, net, device, world)
    # Nearest rounding, as in kernels.tbe: fp16 tables train deterministically.
    sharder = EmbeddingBagCollectionSharder(fused_params={"stochastic_rounding": False})
    dmp = DistributedModelParallel(
        net,
        env=ShardingEnv.from_process_group(dist.group.WORLD),
        device=device,
        plan=ShardingPlan(plans),
        sharders=[sharder],  # type: ignore[list-item]
    )
    _load_rows(dmp, rows)
    return dmp, placements


def _collections(net: nn.Module) -> list[EmbeddingBagCollection]:
    return [m for m in net.modules() if isinstance(m, EmbeddingBagCollection)]


def _module_plans(
    model: ModelSpec, net: nn.Module, device: torch.device, world: int
) -> tuple[dict[str, Any], dict[str, TablePlacement]]:
    """Each embedding collection's sharding plan (its optimizer fused in), and placements."""
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
    return plans, placements


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
            for s in sharded.local_shards():
                (r0, c0), (nr, nc) = s.metadata.shard_offsets, s.metadata.shard_sizes
                source = rows[name][r0 : r0 + nr, c0 : c0 + nc]
                s.tensor.copy_(source.to(s.tensor.dtype))


def gather_local_tables(dmp: nn.Module) -> dict[int, tuple[str, ...]]:
    """Rank to the tables it holds shards of, as every rank sees itself after sharding.

    Every rank must call it (a collective).
    """
    mine = tuple(sorted(name for name, s in _sharded_tables(dmp) if s.local_shards()))
    every: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(every, mine)
    return dict(enumerate(every))


class FusedOptimizerRate:
    """The sharded tables' fused optimizer as a ``train_step.SparseRate``.

    Args:
        optimizer: ``DistributedModelParallel.fused_optimizer``.
    """

    def __init__(self, optimizer: torch.optim.Optimizer) -> None:
        self._optimizer = optimizer

    def set_learning_rate(self, learning_rate: float) -> None:
        for group in self._optimizer.param_groups:
            group["lr"] = learning_rate
        self._optimizer.step()  # only hands the new rate to the fused kernels


def average_batch_norm_stats(dmp: nn.Module) -> None:
    """Averages BatchNorm running statistics over ranks before evaluation.

    Each rank's statistics come from its own slices of the batches (DDP does not sync
    buffers here), and every rank scores part of the evaluation rows, so without this
    a row's score would depend on which rank scored it. Every rank must call it.
    """
    world = dist.get_world_size()
    for module in dmp.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            for stat in (module.running_mean, module.running_var):
                if stat is not None:
                    dist.all_reduce(stat)
                    stat.div_(world)
