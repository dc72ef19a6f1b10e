"""Cost model: work per sample from the spec, seconds on this host, GPU-hours elsewhere.

Two estimates of one trial:

* ``estimate_seconds`` (the planner's, on this host): times a few real training and
  evaluation steps of the spec on the dataset and extrapolates to every step of every
  epoch, plus a fixed overhead. At MovieLens scale a step is dominated by per-op
  overhead, which no FLOP count predicts, so measuring the real step is the honest way.
  Measurements are cached per (spec, dataset) for the process.
* ``estimate_gpu_hours`` (for budgets on hardware we do not have): a roofline from the
  analytic ``work_per_sample`` (FLOPs of the dense MLPs, interaction and over arch,
  forward and backward; bytes of embedding rows read by lookups and read/written by the
  sparse optimizer) under a named GPU profile, plus a per-step launch overhead.

``python -m ranking_models.cost`` compares ``estimate_seconds`` with measured training
on MovieLens-100k for a few specs and prints the relative errors.
"""

import functools
import statistics
import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from contracts import DatasetRef, ModelSpec
from ranking_models.data import CtrDataset
from ranking_models.dlrm import build_model, dense_parameters, interaction_width
from ranking_models.optim import dense_optimizer
from ranking_models.trainer import EVAL_BATCH_SIZE, load_dataset

# Model building and bookkeeping per trial (data loading is cached per process).
FIXED_OVERHEAD_S = 0.1
WARMUP_STEPS = 3
TIMED_STEPS = 8


@dataclass(frozen=True)
class Work:
    """Work of one training sample (forward + backward + optimizer).

    Attributes:
        flops: Floating-point operations (a multiply-add counts 2).
        bytes: Memory traffic of the embedding rows and their optimizer state.
    """

    flops: float
    bytes: float


@dataclass(frozen=True)
class GpuProfile:
    """Published peaks of one accelerator and how much of them DLRM training reaches.

    Attributes:
        name: The accelerator.
        peak_flops: Dense peak FLOP/s at the training precision (fp32 via TF32 here).
        hbm_bytes_per_s: Peak memory bandwidth.
        efficiency: Share of both peaks small DLRM kernels reach.
        step_overhead_s: Launch and host overhead per training step.
    """

    name: str
    peak_flops: float
    hbm_bytes_per_s: float
    efficiency: float = 0.3
    step_overhead_s: float = 1.5e-3


GPU_PROFILES: dict[str, GpuProfile] = {
    # NVIDIA datasheets (SXM, dense, no sparsity): TF32 tensor-core FLOP/s and HBM bandwidth.
    "H100": GpuProfile("H100", peak_flops=494e12, hbm_bytes_per_s=3.35e12),
    "H200": GpuProfile("H200", peak_flops=494e12, hbm_bytes_per_s=4.8e12),
    "A100": GpuProfile("A100", peak_flops=156e12, hbm_bytes_per_s=2.0e12),
}

# Bytes of optimizer state read and written per looked-up element (fp32 state).
_STATE_BYTES_PER_ELEMENT = {"rowwise_adagrad": 0.0, "sgd": 0.0, "adam": 16.0}
_ROW_STATE_BYTES = {"rowwise_adagrad": 8.0, "sgd": 0.0, "adam": 0.0}


def _mlp_flops(width: int, layers: list[int]) -> float:
    total = 0.0
    for out in layers:
        total += 2.0 * width * out
        width = out
    return total


def work_per_sample(
    spec: ModelSpec, num_sparse: int, num_dense: int, ids_per_sample: float
) -> Work:
    """FLOPs and embedding bytes of one training sample of ``spec``.

    Backward costs twice forward for the MLPs and interaction (gradients of inputs and
    weights). Embeddings: a lookup reads each id's row; the fused optimizer reads and
    writes the row and its state.

    Args:
        spec: The model.
        num_sparse: F, the sparse features.
        num_dense: Dense feature columns.
        ids_per_sample: Mean ids looked up per sample over all sparse features.

    Returns:
        The sample's work.
    """
    d, f = spec.embedding_dim, num_sparse
    forward = _mlp_flops(num_dense, [*spec.dense_hidden, d])
    if spec.interaction == "dot":
        forward += 2.0 * (f + 1) ** 2 * d  # (F+1, D) x (D, F+1)
    elif spec.interaction == "dcn":
        w = (f + 1) * d
        per_layer = 2.0 * w * w if spec.dcn_low_rank == 0 else 4.0 * w * spec.dcn_low_rank
        forward += spec.dcn_layers * (per_layer + 3.0 * w)
    else:
        branch = [*spec.projection_hidden, spec.projection_size * d]
        forward += 2.0 * _mlp_flops((f + 1) * d, branch)
        forward += 2.0 * spec.projection_size**2 * d
    forward += _mlp_flops(interaction_width(spec, f), [*spec.over_hidden, 1])
    row_bytes = d * (2.0 if spec.embedding_precision == "fp16" else 4.0)
    opt = spec.sparse_optimizer
    per_id = (
        row_bytes  # lookup
        + 2.0 * row_bytes  # optimizer reads and writes the row
        + d * _STATE_BYTES_PER_ELEMENT[opt]
        + _ROW_STATE_BYTES[opt]
    )
    return Work(flops=3.0 * forward, bytes=ids_per_sample * per_id)


def _ids_per_sample(data: CtrDataset) -> float:
    rows = min(len(data.train), 4096)
    return data.train.batch(slice(0, rows)).sparse.values().numel() / rows


@functools.lru_cache(maxsize=256)
def _measured_seconds(spec_json: str, dataset_json: str) -> tuple[float, float]:
    """(seconds per training step, seconds per evaluated sample) of a spec, on CPU."""
    spec = ModelSpec.model_validate_json(spec_json)
    data = load_dataset(
        DatasetRef.model_validate_json(dataset_json), max_table_rows=spec.max_table_rows
    )
    net = build_model(spec, data.schema, device="cpu")
    optimizer = dense_optimizer(spec, dense_parameters(net))
    generator = torch.Generator().manual_seed(spec.seed)
    net.train()
    batches = data.train.batches(spec.batch_size, generator=generator)
    times = []
    for i in range(WARMUP_STEPS + TIMED_STEPS):
        started = time.perf_counter()  # gathering the batch is part of a step
        batch = next(batches, None)
        if batch is None:
            batches = data.train.batches(spec.batch_size, generator=generator)
            batch = next(batches)
        loss = F.binary_cross_entropy_with_logits(
            net(batch.dense, batch.sparse).squeeze(1), batch.labels
        )
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if i >= WARMUP_STEPS:
            times.append(time.perf_counter() - started)
    net.eval()
    eval_batch = data.validation.batch(slice(0, EVAL_BATCH_SIZE))
    eval_times = []
    with torch.no_grad():
        for _ in range(3):  # the first is a warm-up
            started = time.perf_counter()
            net(eval_batch.dense, eval_batch.sparse)
            eval_times.append(time.perf_counter() - started)
    # Medians: on a shared host one preempted step would otherwise skew the whole estimate.
    return statistics.median(times), statistics.median(eval_times[1:]) / len(eval_batch)


def estimate_seconds(spec: ModelSpec, dataset: DatasetRef) -> float:
    """Estimated wall seconds of one trial of ``spec`` on ``dataset`` on this host (CPU).

    Times a few real steps of the spec (cached per process) and extrapolates to
    ``epochs`` passes over the train split, one validation pass per epoch and a test
    pass, plus ``FIXED_OVERHEAD_S``.
    """
    data = load_dataset(dataset, max_table_rows=spec.max_table_rows)
    step_s, eval_sample_s = _measured_seconds(spec.model_dump_json(), dataset.model_dump_json())
    steps = spec.epochs * data.train.num_batches(spec.batch_size)
    eval_samples = spec.epochs * len(data.validation) + len(data.test)
    return FIXED_OVERHEAD_S + steps * step_s + eval_samples * eval_sample_s


def estimate_gpu_hours(spec: ModelSpec, dataset: DatasetRef, gpu: str = "H100") -> float:
    """Estimated device-hours of one trial on one GPU of a named profile.

    A roofline per sample (the slower of FLOPs at ``efficiency`` x peak and bytes at
    ``efficiency`` x HBM bandwidth; evaluation counts one third of a training sample)
    plus ``step_overhead_s`` per step and ``FIXED_OVERHEAD_S``.

    Args:
        spec: The model.
        dataset: The data.
        gpu: A key of ``GPU_PROFILES``.

    Raises:
        KeyError: Unknown profile; the message lists the known ones.
    """
    if gpu not in GPU_PROFILES:
        raise KeyError(f"unknown GPU profile {gpu!r}; known: {sorted(GPU_PROFILES)}")
    profile = GPU_PROFILES[gpu]
    data = load_dataset(dataset, max_table_rows=spec.max_table_rows)
    work = work_per_sample(
        spec, len(data.schema.sparse_features), data.schema.num_dense, _ids_per_sample(data)
    )
    per_sample = max(
        work.flops / (profile.peak_flops * profile.efficiency),
        work.bytes / (profile.hbm_bytes_per_s * profile.efficiency),
    )
    steps = spec.epochs * data.train.num_batches(spec.batch_size)
    samples = (
        spec.epochs * len(data.train) + (spec.epochs * len(data.validation) + len(data.test)) / 3
    )
    seconds = FIXED_OVERHEAD_S + samples * per_sample + steps * profile.step_overhead_s
    return seconds / 3600.0


REPORT_SPECS: dict[str, dict[str, object]] = {
    "dot": {},
    "dcn full": {"interaction": "dcn", "epochs": 1},
    "dcn low-rank": {"interaction": "dcn", "dcn_low_rank": 8, "batch_size": 256},
    "projection": {"interaction": "projection", "embedding_dim": 32},
    "wide adam fp16": {
        "over_hidden": [256, 128],
        "sparse_optimizer": "adam",
        "embedding_precision": "fp16",
        "batch_size": 1024,
        "epochs": 3,
    },
}


def report_errors(dataset: DatasetRef | None = None) -> list[tuple[str, float, float]]:
    """(name, estimated s, measured s) of each ``REPORT_SPECS`` spec, training for real."""
    from ranking_models.trainer import train

    dataset = dataset or DatasetRef()
    rows = []
    for name, change in REPORT_SPECS.items():
        spec = ModelSpec().with_changes(change)
        load_dataset(dataset, max_table_rows=spec.max_table_rows)  # data loading is cached
        estimate = estimate_seconds(spec, dataset)
        measured = train(spec, dataset, device="cpu").duration_s
        rows.append((name, estimate, measured))
    return rows


if __name__ == "__main__":
    for name, estimate, measured in report_errors():
        error = (estimate - measured) / measured
        print(f"{name:16s} estimated {estimate:6.2f}s measured {measured:6.2f}s error {error:+.0%}")
