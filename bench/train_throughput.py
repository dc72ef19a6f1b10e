"""Training throughput: our fused path vs plain PyTorch vs unfused TorchRec, one run.

Implementations of one DLRM training step (same layer sizes, same batches); the first
three share TorchRec's ``DLRM`` module, so they differ only in the embedding tables and
their optimizer:

* ``fused``: what ``ranking_models.trainer`` runs: ``build_model`` (TorchRec DLRM over
  the FBGEMM TBE of ``kernels``, row-wise Adagrad fused into backward) + Adam on the
  dense parameters.
* ``plain``: one ``nn.EmbeddingBag(sparse=True)`` per table, ``torch.optim.Adagrad``
  (sparse gradients) on the tables + Adam on the rest.
* ``torchrec``: the unfused ``EmbeddingBagCollection`` (dense table gradients),
  ``torch.optim.Adagrad`` on the tables + Adam on the rest.
* ``handwritten``: the plain path with the DLRM itself written by hand (no TorchRec: one
  stack instead of TorchRec's split-and-concatenate), to show what the dense side's
  copies cost.

The ceiling is measured in the same run: a sample needs its dense FLOPs (forward and
backward of the MLPs and the interaction) at the measured matmul rate plus its embedding
traffic (per lookup: read the row forward; read the pooled gradient, read and write the
row backward, i.e. 4 x D x 4 bytes) at the measured copy bandwidth, one after the other.

Batches come from ``ranking_models.synthetic`` and are generated before any timing.
Measurements are interleaved (round-robin, order rotated each round) and the median of
the rounds is reported, so drift in the machine's speed hits every path alike.

Usage::

    python bench/train_throughput.py                      # the default problem
    python bench/train_throughput.py --tables 8 --rows 10000 --batch 512 --rounds 3
"""

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

# Run as a script from anywhere: the repository root holds the packages.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from torchrec.models.dlrm import DLRM
from torchrec.modules.embedding_configs import EmbeddingBagConfig
from torchrec.modules.embedding_modules import (
    EmbeddingBagCollection,
    EmbeddingBagCollectionInterface,
)
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor, KeyedTensor

from bench.step_profile import PARTS as PROFILE_PARTS
from bench.step_profile import breakdown, part
from contracts import ModelSpec
from contracts.dataset import SyntheticSpec
from ranking_models.data import Batch, FeatureSchema
from ranking_models.dlrm import build_model, dense_parameters
from ranking_models.synthetic import SyntheticCriteo

PATHS = ("fused", "plain", "torchrec", "handwritten")


@dataclass(frozen=True)
class Problem:
    """Sizes of the benchmarked model and data."""

    num_dense: int
    tables: int
    rows: int
    dim: int
    batch: int
    dense_hidden: list[int]
    over_hidden: list[int]

    @property
    def spec(self) -> ModelSpec:
        return ModelSpec(
            embedding_dim=self.dim,
            max_table_rows=self.rows,
            dense_hidden=self.dense_hidden,
            over_hidden=self.over_hidden,
            batch_size=self.batch,
        )

    @property
    def interaction_width(self) -> int:
        """Over-arch input: the dense embedding and one dot per pair of the F + 1 vectors."""
        f = self.tables + 1
        return self.dim + f * (f - 1) // 2

    def dense_flops(self) -> float:
        """FLOPs per sample, forward + backward (2x forward): MLPs and interaction bmm."""
        macs = 0
        width = self.num_dense
        for out in [*self.dense_hidden, self.dim]:
            macs += width * out
            width = out
        width = self.interaction_width
        for out in [*self.over_hidden, 1]:
            macs += width * out
            width = out
        macs += (self.tables + 1) ** 2 * self.dim  # (F+1, D) x (D, F+1) per sample
        return 3 * 2 * macs

    def embedding_bytes(self) -> float:
        """Bytes per sample: per lookup, fwd row read + bwd grad read, row read and write."""
        return self.tables * 4 * self.dim * 4


# ---- the three models ------------------------------------------------------------------


def _mlp(width: int, sizes: Sequence[int], last_relu: bool) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i, out in enumerate(sizes):
        layers.append(nn.Linear(width, out))
        if last_relu or i < len(sizes) - 1:
            layers.append(nn.ReLU())
        width = out
    return nn.Sequential(*layers)


class PlainDLRM(nn.Module):
    """DLRM in plain PyTorch: TorchRec's layer sizes and dot interaction, no TorchRec.

    Args:
        problem: The sizes.
    """

    def __init__(self, problem: Problem) -> None:
        super().__init__()
        p = problem
        self.bottom = _mlp(p.num_dense, [*p.dense_hidden, p.dim], last_relu=True)
        self.tables = nn.ModuleList(
            nn.EmbeddingBag(p.rows, p.dim, mode="sum", sparse=True) for _ in range(p.tables)
        )
        self.top = _mlp(p.interaction_width, [*p.over_hidden, 1], last_relu=False)
        rows, cols = torch.triu_indices(p.tables + 1, p.tables + 1, offset=1)
        self.register_buffer("pair_rows", rows, persistent=False)
        self.register_buffer("pair_cols", cols, persistent=False)

    def forward(
        self, dense: torch.Tensor, ids: torch.Tensor, offsets: torch.Tensor
    ) -> torch.Tensor:
        """(B, num_dense) dense, (F, B) ids and (B,) offsets (one id a bag) -> (B, 1) logits."""
        x = self.bottom(dense)  # (B, D)
        pooled = [table(ids[f], offsets) for f, table in enumerate(self.tables)]  # F x (B, D)
        stacked = torch.stack([x, *pooled], dim=1)  # (B, F + 1, D)
        dots = torch.bmm(stacked, stacked.transpose(1, 2))  # (B, F + 1, F + 1)
        pairs = dots[:, self.pair_rows, self.pair_cols]  # (B, (F + 1) F / 2)
        return self.top(torch.cat([x, pairs], dim=1))


class SparseEmbeddingBags(EmbeddingBagCollectionInterface):
    """Plain ``nn.EmbeddingBag(sparse=True)`` tables behind TorchRec's EBC interface.

    Lets the plain path run inside the very same ``DLRM`` module as the fused one, so the
    two differ only in how embeddings are looked up and updated.

    Args:
        tables: One config per table, one feature each.
    """

    def __init__(self, tables: list[EmbeddingBagConfig]) -> None:
        super().__init__()
        self._tables = tables
        self._names = [t.feature_names[0] for t in tables]
        self.bags = nn.ModuleList(
            nn.EmbeddingBag(t.num_embeddings, t.embedding_dim, mode="sum", sparse=True)
            for t in tables
        )

    def forward(self, features: KeyedJaggedTensor) -> KeyedTensor:
        """F features of B examples -> KeyedTensor with (B, F * D) values."""
        per_feature = features.to_dict()
        pooled = [
            bag(per_feature[n].values(), per_feature[n].offsets()[:-1])
            for n, bag in zip(self._names, self.bags, strict=True)
        ]
        dims = [t.embedding_dim for t in self._tables]
        return KeyedTensor(keys=self._names, length_per_key=dims, values=torch.cat(pooled, 1))

    def embedding_bag_configs(self) -> list[EmbeddingBagConfig]:
        """The table configs."""
        return self._tables

    def is_weighted(self) -> bool:
        """Always False: plain sums."""
        return False


def _tables(problem: Problem) -> list[EmbeddingBagConfig]:
    return [
        EmbeddingBagConfig(
            name=f"t_C{i + 1}",
            embedding_dim=problem.dim,
            num_embeddings=problem.rows,
            feature_names=[f"C{i + 1}"],
        )
        for i in range(problem.tables)
    ]


def _dlrm(problem: Problem, tables: EmbeddingBagCollectionInterface) -> DLRM:
    """TorchRec's DLRM over ``tables``: the dense part ``build_model`` builds by default."""
    return DLRM(
        embedding_bag_collection=tables,
        dense_in_features=problem.num_dense,
        dense_arch_layer_sizes=[*problem.dense_hidden, problem.dim],
        over_arch_layer_sizes=[*problem.over_hidden, 1],
    )


Step = Callable[[int], float]


def make_step(
    path: str, problem: Problem, schema: FeatureSchema, batches: list[Batch]
) -> tuple[Step, nn.Module]:
    """A function running one training step on batch ``i % len(batches)``, returning the
    loss, and the model it trains (for the profile).

    Each path gets its inputs in its natural layout, built here (untimed): the KJT for
    the TorchRec models, an (F, B) id tensor for the plain loop.
    """
    spec = problem.spec
    torch.manual_seed(spec.seed)
    if path == "fused":
        net: nn.Module = build_model(spec, schema)
        dense_opt = torch.optim.Adam(dense_parameters(net), lr=spec.dense_lr)
        sparse_opt = None
    elif path in ("plain", "torchrec"):
        # plain: sparse gradients, Adagrad touching only the looked-up rows; torchrec:
        # dense table gradients, Adagrad stepping every row of every table.
        ebc: EmbeddingBagCollectionInterface = (
            SparseEmbeddingBags(_tables(problem))
            if path == "plain"
            else EmbeddingBagCollection(tables=_tables(problem))
        )
        net = _dlrm(problem, ebc)
        table_ids = {id(p) for p in ebc.parameters()}
        dense_opt = torch.optim.Adam(
            [p for p in net.parameters() if id(p) not in table_ids], lr=spec.dense_lr
        )
        sparse_opt = torch.optim.Adagrad(ebc.parameters(), lr=spec.sparse_lr)
    elif path == "handwritten":
        plain = PlainDLRM(problem)
        dense_opt = torch.optim.Adam(
            [p for n, p in plain.named_parameters() if not n.startswith("tables.")],
            lr=spec.dense_lr,
        )
        sparse_opt = torch.optim.Adagrad(plain.tables.parameters(), lr=spec.sparse_lr)
        offsets = torch.arange(problem.batch)
        inputs = [(b.dense, b.sparse.values().view(problem.tables, -1), b.labels) for b in batches]

        def plain_step(i: int) -> float:
            dense, ids, labels = inputs[i % len(inputs)]
            logits = plain(dense, ids, offsets).squeeze(1)
            loss = F.binary_cross_entropy_with_logits(logits, labels)
            value = loss.item()
            dense_opt.zero_grad(set_to_none=True)
            sparse_opt.zero_grad(set_to_none=True)
            loss.backward()
            dense_opt.step()
            sparse_opt.step()
            return value

        return plain_step, plain
    else:
        raise ValueError(f"unknown path {path!r}; choose from {PATHS}")
    net.train()

    def step(i: int) -> float:
        # The trainer's step: forward, loss, .item() (its divergence check), backward,
        # dense optimizer step (and, unfused, the table optimizer).
        # The part(...) ranges cost nothing unless bench.step_profile is profiling.
        b = batches[i % len(batches)]
        logits = net(b.dense, b.sparse)
        with part("loss"):
            loss = F.binary_cross_entropy_with_logits(logits.squeeze(1), b.labels)
            value = loss.item()
        with part("dense optimizer"):
            dense_opt.zero_grad(set_to_none=True)
            if sparse_opt is not None:
                sparse_opt.zero_grad(set_to_none=True)
        with part("backward"):
            loss.backward()
        with part("dense optimizer"):
            dense_opt.step()
            if sparse_opt is not None:
                sparse_opt.step()
        return value

    return step, net


# ---- the machine's ceiling -------------------------------------------------------------


def _best_seconds(fn: Callable[[], object], repeats: int) -> float:
    fn()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def matmul_flops_per_s(problem: Problem, repeats: int = 10) -> float:
    """FP32 GEMM rate at the widest layer's shape: (B, K) x (K, N)."""
    k = max([problem.interaction_width, *problem.dense_hidden, *problem.over_hidden])
    n = max([*problem.dense_hidden, *problem.over_hidden])
    a, b = torch.randn(problem.batch, k), torch.randn(k, n)
    out = torch.empty(problem.batch, n)
    seconds = _best_seconds(lambda: torch.mm(a, b, out=out), repeats)
    return 2.0 * problem.batch * k * n / seconds


def copy_bytes_per_s(megabytes: int = 256, repeats: int = 5) -> float:
    """Memory bandwidth of a large copy (bytes read + written per second)."""
    src = torch.ones(megabytes * 2**20 // 4)
    dst = torch.empty_like(src)
    seconds = _best_seconds(lambda: dst.copy_(src), repeats)
    return 2.0 * src.nbytes / seconds


# ---- driver ----------------------------------------------------------------------------


def make_batches(problem: Problem, count: int) -> tuple[FeatureSchema, list[Batch]]:
    """``count`` synthetic batches, generated before any timing."""
    spec = SyntheticSpec(
        rows=count * problem.batch,
        num_dense=problem.num_dense,
        cardinalities=(problem.rows,) * problem.tables,
        block_rows=problem.batch,
    )
    source = SyntheticCriteo(spec, num_rows=spec.rows, max_table_rows=problem.rows)
    schema = FeatureSchema(
        sparse_features=source.keys,
        table_rows=source.table_rows,
        dense_features=source.dense_names,
    )
    batches = [source.block(i).batch(slice(None)) for i in range(count)]
    return schema, batches


def run(args: argparse.Namespace) -> dict[str, float]:
    """Measures every path and prints the table; returns the figures by name."""
    torch.set_num_threads(args.threads)
    problem = Problem(
        num_dense=args.dense,
        tables=args.tables,
        rows=args.rows,
        dim=args.dim,
        batch=args.batch,
        dense_hidden=args.dense_hidden,
        over_hidden=args.over_hidden,
    )
    paths = args.paths
    schema, batches = make_batches(problem, args.batches)
    made = {p: make_step(p, problem, schema, batches) for p in paths}
    steps = {p: step for p, (step, _) in made.items()}
    for p in paths:
        for i in range(args.warmup):
            steps[p](i)
    samples: dict[str, list[float]] = {p: [] for p in paths}
    flops_rates: list[float] = []
    bandwidths: list[float] = []
    counter = args.warmup
    # The ceiling probes take their turn in the rotation too, so a noisy neighbour or
    # frequency drift weighs on the ceiling as on the paths.
    items = [*paths, "ceiling"]
    for r in range(args.rounds):
        for item in items[r % len(items) :] + items[: r % len(items)]:
            if item == "ceiling":
                flops_rates.append(matmul_flops_per_s(problem))
                bandwidths.append(copy_bytes_per_s(args.copy_mb))
                continue
            start = time.perf_counter()
            for i in range(args.iters):
                steps[item](counter + i)
            samples[item].append(args.iters * problem.batch / (time.perf_counter() - start))
        counter += args.iters
    flops_rate = statistics.median(flops_rates)
    bandwidth = statistics.median(bandwidths)
    seconds = problem.dense_flops() / flops_rate + problem.embedding_bytes() / bandwidth
    ceiling = 1.0 / seconds

    results = {f"{p}_samples_per_s": statistics.median(samples[p]) for p in paths}
    results |= {
        "ceiling_samples_per_s": ceiling,
        "matmul_gflops": flops_rate / 1e9,
        "copy_gb_per_s": bandwidth / 1e9,
    }
    print(
        f"DLRM {problem.num_dense} dense / {problem.tables} sparse, tables "
        f"{problem.tables} x {problem.rows} x {problem.dim}, batch {problem.batch}, "
        f"dense {problem.dense_hidden}, over {problem.over_hidden}, "
        f"threads {torch.get_num_threads()}, {args.rounds} rounds x {args.iters} steps"
    )
    print(
        f"ceiling: {problem.dense_flops() / 1e6:.2f} MFLOP/sample at "
        f"{flops_rate / 1e9:.1f} GFLOP/s + {problem.embedding_bytes() / 1e3:.1f} kB/sample "
        f"at {bandwidth / 1e9:.1f} GB/s = {ceiling:,.0f} samples/s"
    )
    base = results.get("plain_samples_per_s")
    print(f"{'path':<10}{'samples/s':>12}{'min':>10}{'max':>10}{'vs plain':>10}{'vs ceiling':>12}")
    for p in paths:
        value = results[f"{p}_samples_per_s"]
        vs_plain = f"{value / base:.2f}x" if base else "-"
        print(
            f"{p:<10}{value:>12,.0f}{min(samples[p]):>10,.0f}{max(samples[p]):>10,.0f}"
            f"{vs_plain:>10}{value / ceiling:>12.2f}"
        )
    if "fused" in paths:
        fused = results["fused_samples_per_s"]
        if base:
            results["fused_vs_plain"] = fused / base
        results["fused_vs_ceiling"] = fused / ceiling
        if args.profile_steps:
            print_breakdown(breakdown(steps["fused"], made["fused"][1], args.profile_steps))
    return results


def print_breakdown(ms: dict[str, float]) -> None:
    """The fused step's milliseconds by part, largest first, with each part's share."""
    total = sum(ms.values())
    print(f"fused step by part (torch.profiler, {total:.1f} ms/step profiled):")
    for name in sorted(PROFILE_PARTS, key=lambda n: -ms[n]):
        print(f"  {name:<28}{ms[name]:>8.2f} ms{ms[name] / total:>8.0%}")


def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x]


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The command line (defaults: the Criteo-sized problem of the tracker's issue 3)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dense", type=int, default=13, help="dense features")
    parser.add_argument("--tables", type=int, default=26, help="sparse features, one table each")
    parser.add_argument("--rows", type=int, default=100_000, help="rows per table")
    parser.add_argument("--dim", type=int, default=64, help="embedding dimension D")
    parser.add_argument("--batch", type=int, default=2048)
    parser.add_argument("--dense-hidden", type=_ints, default=[512, 256])
    parser.add_argument("--over-hidden", type=_ints, default=[512, 256])
    parser.add_argument("--batches", type=int, default=8, help="distinct pre-generated batches")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps per path")
    parser.add_argument("--iters", type=int, default=10, help="timed steps per round and path")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--copy-mb", type=int, default=256, help="bandwidth probe size")
    parser.add_argument("--paths", type=lambda s: tuple(s.split(",")), default=PATHS)
    parser.add_argument(
        "--profile-steps", type=int, default=5, help="fused steps to profile by part (0: none)"
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> dict[str, float]:
    """Entry point; returns the figures (for the smoke test)."""
    return run(parse_args(argv))


if __name__ == "__main__":
    main()
